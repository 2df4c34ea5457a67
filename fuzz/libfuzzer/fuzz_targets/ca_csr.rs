#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::targets::ca::ca_csr(data));
