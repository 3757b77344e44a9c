//! Fuzzes the control plane's HTTP wire: arbitrary bytes as one
//! connection's input through hyper's server exactly as `[cluster] listen`
//! configures it (head timeout and size), the route table, the `after=`
//! query, the `x-mxgate-*` headers and the 256 KiB body limit
//! (`cluster::server::wire::check_request_bytes`): no panic, and whatever
//! the server wrote is an HTTP/1.x answer (1.0 to a 1.0 request) or nothing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mxgate::cluster::server::wire::check_request_bytes;

fuzz_target!(|data: &[u8]| {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let output = runtime.block_on(check_request_bytes(data));
    assert!(
        output.is_empty() || output.starts_with(b"HTTP/1.1 ") || output.starts_with(b"HTTP/1.0 "),
        "{:?}",
        String::from_utf8_lossy(&output)
    );
});
