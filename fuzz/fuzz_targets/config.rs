//! The config-file parser and planner, and the CIDR and service parsers:
//! no input panics, and an accepted plan is consistent.
#![no_main]
use lb_user::config::{parse_cidr, parse_file, parse_service, plan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_cidr(text);
    let _ = parse_service(text);
    if let Ok(specs) = parse_file(text)
        && let Ok(plan) = plan(&specs, 2000)
    {
        assert_eq!(plan.groups.len(), specs.len());
        assert!(
            plan.groups
                .iter()
                .all(|g| g.group.is_multicast() && g.port >= 1024)
        );
        assert!(
            plan.services
                .iter()
                .all(|s| (s.group_id as usize) < plan.groups.len())
        );
    }
});
