//! Transports: how MCP messages reach the server. stdio for local clients; Streamable HTTP and
//! legacy SSE for hosted use. Each wires a `VaultMcp` to its wire and, where needed, serves the
//! Connect pages next to it.

pub mod http;
pub mod stdio;
pub mod stdio_frames;
