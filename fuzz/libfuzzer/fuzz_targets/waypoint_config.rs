#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::targets::waypoint::waypoint_config(data));
