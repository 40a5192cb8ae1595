//! The configuration loader: any text is either a valid configuration or an
//! error that names a real position in it, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use server::config::{Config, ConfigError, FileSource};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, "fuzz.toml", &FileSource::Embedded) {
        Ok(config) => {
            // What the server relies on once a configuration is accepted.
            assert!(config.server.workers >= 1);
            assert!(config.terminal.max_sessions_per_user >= 1);
            for t in &config.templates {
                assert!(!t.command.is_empty() && !t.command[0].is_empty());
                assert!(
                    !t.command[0].contains('{'),
                    "a parameter chooses the program"
                );
            }
        }
        Err(ConfigError::Invalid {
            file,
            line,
            column,
            key,
            message,
        }) => {
            assert_eq!(file, "fuzz.toml");
            let lines = text.split('\n').count();
            assert!(line >= 1 && line <= lines, "line {line} of {lines}");
            assert!(column >= 1);
            assert!(!key.is_empty() && !message.is_empty());
        }
        Err(ConfigError::Read { .. }) => unreachable!("parse reads no file"),
    }
});
