//! Malformed, truncated, oversized, wrong-version, wrong-album and
//! wrong-epoch requests each get a typed refusal and leave the chain as it
//! was.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::as_conversions)] // test code

mod common;

use std::time::Duration;

use capsule_chain::conformance::CommitSource;
use capsule_chain::rules::Limits;
use capsule_chain::wire::{self, Reply, ServerError, WireError};
use capsule_chain::{CommitChain as _, Epoch, Refused, Submission};
use capsule_client::HttpChain;
use capsule_server::{Checks, Database, Running, Settings};

/// These tests send made-up albums: ordering rules and framing only.
fn ordering_only() -> Settings {
    Settings { checks: Checks::OrderingOnly, ..Settings::default() }
}
use common::LOOPBACK;

const ALBUM: [u8; 16] = [0xF1; 16];

fn post(agent: &ureq::Agent, url: &str, body: &[u8]) -> (u16, Option<Reply>) {
    let mut response = agent.post(url).send(body).unwrap();
    let status = response.status().as_u16();
    let bytes = response.body_mut().with_config().limit(1 << 20).read_to_vec().unwrap();
    (status, wire::decode(&bytes, 1 << 20).ok())
}

fn get(agent: &ureq::Agent, url: &str) -> (u16, Option<Reply>) {
    let mut response = agent.get(url).call().unwrap();
    let status = response.status().as_u16();
    let bytes = response.body_mut().with_config().limit(1 << 20).read_to_vec().unwrap();
    (status, wire::decode(&bytes, 1 << 20).ok())
}

#[test]
fn every_bad_request_is_refused_with_a_type_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Small limits, so an oversized body is cheap to send.
    let limits = Limits { commit: 64 << 10, welcome: 64 << 10, bundle: 16 << 10 };
    let settings = Settings { limits, checks: Checks::OrderingOnly, ..Settings::default() };
    let server = Running::start(&Database::Sqlite(dir.path().join("chain.sqlite")), LOOPBACK, settings).unwrap();
    let mut chain = HttpChain::new(&server.url(), &ALBUM, Duration::from_secs(10));
    chain.create_album(Epoch::ZERO, None).unwrap();
    let mut src = CommitSource::new(ALBUM).unwrap();
    let first = src.stage().unwrap();
    chain.submit(&first).unwrap();
    src.accepted().unwrap();
    let next = src.stage().unwrap();
    let state = |chain: &mut HttpChain| (chain.head().unwrap(), chain.fetch(Epoch::ZERO).unwrap());
    let before = state(&mut chain);

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let album_url = format!("{}/v1/albums/{}", server.url(), "f1".repeat(16));
    let commits = format!("{album_url}/commits");
    let good = wire::encode(&next).unwrap();
    let bad_request = |e| Some(Reply::Error(ServerError::BadRequest(e)));
    let cases: Vec<(&str, Vec<u8>, u16, Option<Reply>)> = vec![
        ("empty body", vec![], 400, bad_request(WireError::Empty)),
        ("unknown version", [&[9u8][..], &good[1..]].concat(), 400, bad_request(WireError::Version(9))),
        ("truncated", good[..good.len() / 2].to_vec(), 400, bad_request(WireError::Malformed)),
        ("trailing bytes", [good.as_slice(), &[0]].concat(), 400, bad_request(WireError::Trailing)),
        ("garbage", [&[1u8][..], &[0xff; 12]].concat(), 400, bad_request(WireError::Malformed)),
        ("not a body of ours", b"GET / HTTP/1.1".to_vec(), 400, bad_request(WireError::Version(b'G'))),
        (
            "oversized body",
            vec![1; usize::try_from(limits.body()).unwrap() + 1],
            413,
            bad_request(WireError::TooLarge { limit: limits.body() }),
        ),
        (
            "oversized commit",
            wire::encode(&Submission { commit: vec![0; 64 << 10 | 1], ..next.clone() }).unwrap(),
            413,
            Some(Reply::Error(ServerError::Refused(Refused::TooLarge { limit: limits.commit }))),
        ),
        (
            "wrong epoch",
            wire::encode(&Submission { epoch: Epoch(5), ..next.clone() }).unwrap(),
            422,
            Some(Reply::Error(ServerError::Refused(Refused::WrongEpoch { claimed: Epoch(5), framed: Epoch(1) }))),
        ),
        (
            "wrong album",
            wire::encode(&CommitSource::new([0xF2; 16]).unwrap().stage().unwrap()).unwrap(),
            422,
            Some(Reply::Error(ServerError::Refused(Refused::WrongAlbum))),
        ),
    ];
    for (name, body, status, reply) in cases {
        assert_eq!(post(&agent, &commits, &body), (status, reply), "{name}");
        assert_eq!(state(&mut chain), before, "{name} changed the chain");
    }
    // Paths and queries.
    let malformed = bad_request(WireError::Malformed);
    let gets = [
        (format!("{album_url}/commits"), 400),
        (format!("{album_url}/commits?from=x"), 400),
        (format!("{album_url}/commits?from=1&extra=2"), 400),
        (format!("{album_url}/welcomes/minus-one"), 400),
        (format!("{}/v1/albums/zz/head", server.url()), 400),
        (format!("{}/v1/nothing-here", server.url()), 404),
    ];
    for (url, status) in gets {
        assert_eq!(get(&agent, &url), (status, malformed.clone()), "{url}");
    }
    // A path that does not percent-decode, and a method no route has: typed too.
    assert_eq!(get(&agent, &format!("{album_url}/welcomes/%ff")), (400, malformed.clone()));
    assert_eq!(get(&agent, &format!("{}/v1/albums/%ff%fe/head", server.url())), (400, malformed.clone()));
    assert_eq!(post(&agent, &format!("{album_url}/head"), b""), (405, malformed.clone()));
    // Nothing counted as ordered; every refusal counted.
    assert_eq!(server.metrics().get(capsule_server::Outcome::Accepted), 1);
    assert_eq!(server.metrics().get(capsule_server::Outcome::Refused), 3);
    assert_eq!(server.metrics().get(capsule_server::Outcome::BadRequest), 7);
    // And the honest commit still goes in.
    assert_eq!(chain.submit(&next), Ok(capsule_chain::SubmitAnswer::Accepted { epoch: Epoch(1) }));
}

/// Idempotent before refusing: a commit the chain holds, sent again after its
/// answer was lost to a server since restarted with lower limits, answers its
/// position instead of a refusal that would make the device drop it.
#[test]
fn a_held_commit_sent_again_answers_its_position_even_over_new_limits() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::Sqlite(dir.path().join("chain.sqlite"));
    let mut src = CommitSource::new(ALBUM).unwrap();
    let first = src.stage().unwrap();
    {
        let server = Running::start(&db, LOOPBACK, ordering_only()).unwrap();
        let mut chain = HttpChain::new(&server.url(), &ALBUM, Duration::from_secs(10));
        chain.create_album(Epoch::ZERO, None).unwrap();
        assert_eq!(chain.submit(&first), Ok(capsule_chain::SubmitAnswer::Accepted { epoch: Epoch(0) }));
    }
    // The commit limit lowered under the commit's size (the body limit still reads it).
    let tiny = Limits { commit: 16, welcome: 1 << 20, bundle: 16 };
    let server = Running::start(&db, LOOPBACK, Settings { limits: tiny, ..ordering_only() }).unwrap();
    let mut chain = HttpChain::new(&server.url(), &ALBUM, Duration::from_secs(10));
    assert_eq!(chain.submit(&first), Ok(capsule_chain::SubmitAnswer::Accepted { epoch: Epoch(0) }));
    // A commit the chain does not hold is refused under the new limits.
    src.accepted().unwrap();
    let next = src.stage().unwrap();
    assert_eq!(chain.submit(&next), Err(capsule_chain::ChainError::Refused(Refused::TooLarge { limit: 16 })));
    assert_eq!(chain.head(), Ok(Epoch(1)));
}
