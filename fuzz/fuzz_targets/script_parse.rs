//! Any text either parses into a script that steps without panicking, or gives a pointed error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podlife::target::script::Script;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Script::parse(text) {
        Ok(script) => {
            let mut cursor = script.start(0);
            for t in [0, 1, 999, 1_000, 60_000, 86_400_000, u64::MAX / 8] {
                let _ = script.hit(&mut cursor, t);
                assert!(cursor.step < script.steps.len());
            }
        }
        Err(e) => assert!(e.column >= 1 && e.column <= text.chars().count() + 1, "{e}"),
    }
});
