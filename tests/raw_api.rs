//! The API as a raw gRPC client sees it: what the CLI would have caught is caught by
//! the server too.

mod support;

use shoal_wire::pb;
use support::*;

fn call<T>(
    server: &Server,
    f: impl AsyncFnOnce(&mut pb::api_client::ApiClient<tonic::transport::Channel>) -> T,
) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut client = shoal_wire::api_client(&server.url, &server.credentials())
            .await
            .expect("connect");
        f(&mut client).await
    })
}

/// serde_json keeps the last of two equal keys: the server must refuse them instead.
#[test]
fn duplicate_json_keys_are_refused() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::embedded(data.path());
    let twice = r#"{"apiVersion":"shoal.dev/v1","kind":"Service","metadata":{"name":"dup"},"spec":{"image":"seen","image":"applied"}}"#;
    let applied = call(&server, async |c| {
        c.apply(pb::ApplyRequest {
            manifests: vec![pb::Manifest {
                json: twice.into(),
                source: "raw".into(),
            }],
            dry_run: false,
        })
        .await
    });
    match applied {
        Err(s) => {
            assert_eq!(s.code(), tonic::Code::InvalidArgument);
            assert!(
                s.message().contains("duplicate key \"image\""),
                "{}",
                s.message()
            );
        }
        Ok(r) => panic!("applied: {:?}", r.into_inner().results),
    }
    assert!(!server.shoal(&["get", "svc", "dup"]).status.success());
    apply(
        &server,
        "apiVersion: shoal.dev/v1\nkind: Service\nmetadata: {name: dup}\nspec: {image: a}\n",
    );
    let patched = call(&server, async |c| {
        c.patch(pb::PatchRequest {
            kind: "Service".into(),
            name: "dup".into(),
            merge_patch_json: r#"{"spec":{"replicas":2,"replicas":9}}"#.into(),
        })
        .await
    });
    match patched {
        Err(s) => assert!(s.message().contains("duplicate key"), "{}", s.message()),
        Ok(r) => panic!("patched: {}", r.into_inner().json),
    }
    let svc = json(server.shoal(&["get", "svc", "dup", "-o", "json"]));
    assert!(svc["spec"].get("replicas").is_none(), "{svc}");
}
