//! gRPC reflection as real clients ask for it: Python's grpcio (whose grpcio-reflection
//! client, like Evans and older grpcurl, speaks v1alpha) and the v1 that grpcurl speaks,
//! over TLS trusting the cluster CA.

mod support;

use support::*;

/// Asks each reflection service to list services, with grpcio and the request bytes
/// grpcio-reflection sends (`list_services: ""`, field 7).
const CLIENT: &str = r#"
import sys, grpc
roots = open(sys.argv[2], "rb").read()
channel = grpc.secure_channel(sys.argv[1], grpc.ssl_channel_credentials(root_certificates=roots))
for version in ["v1alpha", "v1"]:
    call = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        reply = next(call(iter([b"\x3a\x00"]), timeout=10))
        print(version, "lists shoal.v1.Api" if b"shoal.v1.Api" in reply else "lists no shoal.v1.Api")
    except grpc.RpcError as e:
        print(version, e.code().name)
"#;

#[test]
fn reflection_answers_v1alpha_and_v1_clients() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::embedded(&tmp.path().join("data"));
    let target = server.url.trim_start_matches("https://").to_string();
    // Reflection needs no client certificate (it tells what the API is, not what is
    // in it); the server's is checked against the cluster CA.
    let ca = server.data_dir.join("ca.pem");
    // Debian's python3, where its python3-grpcio lives (hack/test.sh installs it).
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", CLIENT, &target])
        .arg(&ca)
        .output()
        .expect("run python3");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "v1alpha lists shoal.v1.Api\nv1 lists shoal.v1.Api\n",
        "{}",
        stderr(&out)
    );
}
