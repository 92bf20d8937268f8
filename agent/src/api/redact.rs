//! Secret removal for support bundles: every mapping key that names a secret (tokens, passwords,
//! private keys, credentials) gets its value replaced by [`REDACTED`], at any depth. Pure.

use serde_yaml::Value;

/// What a removed secret reads as.
pub const REDACTED: &str = "REDACTED";

/// Key fragments (lower-case) that mark a secret.
const SECRET_KEYS: [&str; 9] = [
    "token",
    "password",
    "passwd",
    "secret",
    "key-data",
    "client-key",
    "credential",
    "apikey",
    "api-key",
];

/// Whether a mapping key names a secret.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEYS.iter().any(|s| key.contains(s))
}

/// Replaces every secret value in `value`, recursively.
pub fn redact(value: &mut Value) {
    match value {
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                if key.as_str().is_some_and(is_secret_key) && !item.is_null() {
                    *item = Value::String(REDACTED.into());
                } else {
                    redact(item);
                }
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(redact),
        Value::Tagged(tagged) => redact(&mut tagged.value),
        _ => {}
    }
}

/// Redacts YAML or JSON text (JSON stays JSON); text that does not parse is withheld entirely.
pub fn redact_text(text: &str) -> String {
    if serde_json::from_str::<serde_json::Value>(text).is_ok() {
        if let Ok(mut value) = serde_yaml::from_str::<Value>(text) {
            redact(&mut value);
            if let Ok(json) = serde_json::to_string_pretty(&value) {
                return json + "\n";
            }
        }
    }
    match serde_yaml::from_str::<Value>(text) {
        Ok(mut value) => {
            redact(&mut value);
            serde_yaml::to_string(&value).unwrap_or_else(|_| REDACTED.to_string())
        }
        Err(e) => {
            format!("# withheld: does not parse as YAML ({e}), so secrets cannot be removed\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_secrets_are_removed_and_the_rest_kept() {
        let kubeconfig = "apiVersion: v1\nclusters:\n- cluster:\n    server: https://10.0.0.1:6443\n    certificate-authority-data: Q0E=\n  name: c\nusers:\n- name: u\n  user:\n    token: eyJhbGciOiJSUzI1NiJ9.secret\n    client-key-data: UFJJVkFURQ==\n    password: hunter2\n    auth-provider:\n      config:\n        id-token: abc\n        refresh-token: def\n";
        let out = redact_text(kubeconfig);
        for secret in [
            "eyJhbGciOiJSUzI1NiJ9.secret",
            "UFJJVkFURQ==",
            "hunter2",
            "abc",
            "def",
        ] {
            assert!(!out.contains(secret), "{secret} left in:\n{out}");
        }
        assert!(out.contains("https://10.0.0.1:6443"), "{out}");
        assert!(out.contains("certificate-authority-data: Q0E="), "{out}");
        assert_eq!(out.matches(REDACTED).count(), 5, "{out}");
    }

    #[test]
    fn json_stays_json() {
        let out = redact_text(r#"{"name":"x","plugins":[{"type":"y","apiToken":"s3cr3t"}]}"#);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["plugins"][0]["apiToken"], REDACTED);
        assert_eq!(v["name"], "x");
    }

    #[test]
    fn unparsable_text_is_withheld() {
        let out = redact_text("token: [unclosed");
        assert!(out.starts_with("# withheld"), "{out}");
        assert!(!out.contains("unclosed"), "{out}");
    }
}
