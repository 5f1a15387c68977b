//! A mesh file as the file source reads it: JSON or YAML, the compact format
//! or Envoy resources in any accepted shape, then the xDS translation. Errors
//! are expected; a panic, or a mesh the map writer could not take, is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(loaded) = kmesh_agent::config::load_text(text) {
        kmesh_fuzz_input::check_mesh(&loaded.mesh);
    }
});
