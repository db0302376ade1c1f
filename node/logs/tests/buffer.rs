//! The file buffer across crashes: what was synced comes back whole, a write cut
//! short is dropped, a chunk changed on disk is quarantined and reported, and the
//! limits shape chunks and refuse what does not fit.

use std::time::Duration;

use rmpv::Value;
use shoal_logs::buffer::{BufferError, FileBuffer, Limits};
use shoal_logs::{Event, EventTime};

fn event(i: u32) -> Event {
    Event {
        tag: "task.api.api-1".into(),
        time: EventTime {
            secs: 1_700_000_000,
            nanos: i,
        },
        record: Value::Map(vec![(
            Value::from("log"),
            Value::from(format!("line {i:06}")),
        )]),
    }
}

fn limits() -> Limits {
    Limits {
        chunk_bytes: 1 << 20,
        chunk_age: Duration::from_secs(3600),
        total_bytes: 64 << 20,
    }
}

/// Every event still in the buffer, oldest chunk first (delivering each).
fn drain(b: &mut FileBuffer) -> Vec<u32> {
    let mut got = Vec::new();
    while let Some(chunk) = b.oldest().expect("read") {
        got.extend(chunk.events.iter().map(|e| e.time.nanos));
        b.delivered(chunk.seq).expect("delivered");
    }
    got
}

fn chunk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn synced_events_survive_a_crash_and_a_torn_write_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut b, _) = FileBuffer::open(dir.path(), limits()).expect("open");
        for i in 0..1000 {
            b.append(&event(i)).expect("append");
        }
        b.sync().expect("sync");
        // Dropped without sealing: the process dies here.
    }
    // The crash came in the middle of writing one more record.
    let open = chunk_files(dir.path()).pop().expect("the open chunk");
    let mut bytes = std::fs::read(&open).expect("read");
    bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4, 0x93]);
    std::fs::write(&open, bytes).expect("write");

    let (mut b, recovered) = FileBuffer::open(dir.path(), limits()).expect("reopen");
    assert_eq!(recovered.chunks, 1);
    assert_eq!(recovered.torn_records, 1);
    assert!(recovered.quarantined.is_empty());
    assert_eq!(
        drain(&mut b),
        (0..1000).collect::<Vec<_>>(),
        "all, in order"
    );
    assert!(
        chunk_files(dir.path()).is_empty(),
        "delivered chunks are gone"
    );
}

#[test]
fn a_chunk_changed_on_disk_is_quarantined_not_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let small = Limits {
        chunk_bytes: 400,
        ..limits()
    };
    {
        let (mut b, _) = FileBuffer::open(dir.path(), small).expect("open");
        for i in 0..40 {
            b.append(&event(i)).expect("append");
        }
        b.seal().expect("seal");
        assert!(
            b.ready_chunks() > 2,
            "chunks of 400 bytes: {}",
            b.ready_chunks()
        );
    }
    let first = chunk_files(dir.path()).remove(0);
    let mut bytes = std::fs::read(&first).expect("read");
    bytes[20] ^= 0xff;
    std::fs::write(&first, bytes).expect("write");

    let (mut b, recovered) = FileBuffer::open(dir.path(), small).expect("starts anyway");
    assert_eq!(recovered.quarantined.len(), 1);
    assert!(recovered.quarantined[0].starts_with(dir.path().join("quarantine")));
    let rest = drain(&mut b);
    assert!(
        !rest.is_empty() && !rest.contains(&0),
        "the other chunks: {rest:?}"
    );
}

#[test]
fn chunks_seal_by_size_and_age_and_the_limit_refuses_what_does_not_fit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tight = Limits {
        chunk_bytes: 1000,
        chunk_age: Duration::from_millis(50),
        total_bytes: 3000,
    };
    let (mut b, _) = FileBuffer::open(dir.path(), tight).expect("open");
    b.append(&event(0)).expect("append");
    b.tick().expect("tick");
    assert_eq!(b.ready_chunks(), 0, "young");
    std::thread::sleep(Duration::from_millis(60));
    b.tick().expect("tick");
    assert_eq!(b.ready_chunks(), 1, "sealed by age");
    let mut n = 1;
    let err = loop {
        match b.append(&event(n)) {
            Ok(()) => n += 1,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, BufferError::Full { limit: 3000, .. }),
        "{err}"
    );
    assert!(b.held() <= 3000);
    let dropped = b.drop_oldest().expect("drop");
    assert_eq!(dropped, 1, "the first chunk held one event");
    b.append(&event(n)).expect("room again");
    let dead = dir.path().join("dead");
    b.seal().expect("seal");
    let chunk = b.oldest().expect("read").expect("a chunk");
    let moved = b.set_aside(chunk.seq, &dead).expect("set aside");
    assert!(moved.starts_with(&dead) && moved.is_file());
}

proptest::proptest! {
    #[test]
    fn whatever_a_chunk_file_holds_opening_the_buffer_never_panics(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("00000000000000000007.open"), &bytes).expect("write");
        if let Ok((mut b, _)) = FileBuffer::open(dir.path(), limits()) {
            let _ = drain(&mut b);
            b.append(&event(1)).expect("appends after recovery");
        }
    }
}

#[test]
fn a_line_encoded_straight_into_a_record_reads_back_as_its_message_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let time = EventTime {
        secs: 1_700_000_000,
        nanos: 42,
    };
    let line = "GET /index.html 200 \u{e9}";
    let as_event = Event {
        tag: "tail.app".into(),
        time,
        record: Value::Map(vec![(Value::from("message"), Value::from(line))]),
    };
    let straight = shoal_logs::buffer::message_body("tail.app", time, line);
    assert_eq!(
        straight,
        shoal_logs::buffer::body(&as_event),
        "the same bytes"
    );
    let (mut buffer, _) = FileBuffer::open(dir.path(), limits()).expect("open");
    buffer.append_body(&straight).expect("append");
    buffer.seal().expect("seal");
    let chunk = buffer.oldest().expect("read").expect("a chunk");
    assert_eq!(chunk.events, vec![as_event]);
}
