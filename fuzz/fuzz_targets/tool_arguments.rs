#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vault_mcp::fuzzing::tool_arguments(data));
