//! Any bytes as a trigger-directory file: every parser returns a value or a
//! typed error, never panics, and what it accepts renders back to a file that
//! parses to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use slony_shared::ident::NodeName;
use slony_shared::trigger::{parse_series_list, Outcome, Request, SqlDone, TriggerKind};

fuzz_target!(|data: &[u8]| {
    let node = NodeName::new("site1").expect("a valid node name");
    if let Ok(request) = Request::parse(data, &node) {
        let again = Request::parse(request.render().as_bytes(), &node)
            .expect("a parsed request renders to a valid request");
        assert_eq!(again, request);
    }
    if let Ok(done) = SqlDone::parse(data) {
        let again = SqlDone::parse(done.render().as_bytes())
            .expect("a parsed answer renders to a valid answer");
        match (&done, &again) {
            (
                SqlDone::Ready {
                    new_site,
                    counter,
                    notes,
                },
                SqlDone::Ready {
                    new_site: n2,
                    counter: c2,
                    notes: notes2,
                },
            ) => {
                assert_eq!((new_site, counter, notes.len()), (n2, c2, notes2.len()));
            }
            (SqlDone::Failed { .. }, SqlDone::Failed { .. }) => {}
            _ => panic!("{done:?} rendered and parsed as {again:?}"),
        }
    }
    if let Ok(outcome) = Outcome::parse(data) {
        let again = Outcome::parse(outcome.render().as_bytes())
            .expect("a parsed outcome renders to a valid outcome");
        assert_eq!(again.success, outcome.success);
        assert_eq!(again.reason.is_some(), outcome.reason.is_some());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_series_list(text);
        if let Ok(Some((node, kind))) = TriggerKind::parse_file_name(text) {
            assert_eq!(kind.file_name(&node), text);
        }
    }
});
