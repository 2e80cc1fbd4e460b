use serde_json::Value;

/// `value` serialised compactly with object keys sorted at every level: what Python's
/// `json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` prints.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    out
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            // Python sorts by code point; UTF-8 byte order is the same order.
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_value(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::String(s) => write_string(s, out),
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn write_string(s: &str, out: &mut String) {
    // serde_json escapes exactly what Python does with ensure_ascii=False: '"', '\\' and
    // control characters (as \n, \t, ... or lowercase \u00XX); everything else stays raw UTF-8.
    out.push_str(&serde_json::to_string(s).expect("a string always serialises"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_at_every_level_and_is_compact() {
        let v = json!({"b": 1, "a": {"z": [3, {"y": true, "x": null}], "c": "d"}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":"d","z":[3,{"x":null,"y":true}]},"b":1}"#
        );
    }

    #[test]
    fn matches_python_escaping_with_ensure_ascii_false() {
        // json.dumps({"k": "é\u2028\n\"\\\x01"}, sort_keys=True, separators=(",",":"),
        //            ensure_ascii=False)
        let v = json!({"k": "é\u{2028}\n\"\\\u{1}"});
        assert_eq!(
            canonical_json(&v),
            "{\"k\":\"é\u{2028}\\n\\\"\\\\\\u0001\"}"
        );
    }

    #[test]
    fn orders_keys_by_code_point() {
        let v = json!({"é": 1, "z": 2, "Z": 3, "a": 4});
        assert_eq!(canonical_json(&v), r#"{"Z":3,"a":4,"z":2,"é":1}"#);
    }
}
