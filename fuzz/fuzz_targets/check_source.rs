//! Any text through parse, bind, lint and shape checks: must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(schema) = plec::schema::Schema::builtin() {
            let checked = plec::pipeline::check_source(&schema, text);
            let _ = plec::diag::render_json("fuzz", text, &checked.diagnostics);
        }
    }
});
