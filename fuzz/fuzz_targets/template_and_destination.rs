#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vault_mcp::fuzzing::template_and_destination(data));
