#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::targets::manifests::controller_manifests(data));
