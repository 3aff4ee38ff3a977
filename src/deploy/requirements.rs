//! How much GPU memory a model needs: the test's `min_vram_gb`, else a table of common models,
//! else an estimate from the parameter count in its name.

/// Known models (lower-cased substrings of the name) and the GPU memory they are served with.
const KNOWN: &[(&str, f64)] = &[
    ("tinyllama", 4.0),
    ("smollm2-135m", 2.0),
    ("qwen2.5-0.5b", 4.0),
    ("phi-3-mini", 10.0),
    ("mistral-7b", 18.0),
    ("qwen2.5-7b", 18.0),
    ("llama-3.1-8b", 20.0),
    ("llama-3-8b", 20.0),
    ("gemma-2-9b", 24.0),
    ("llama-3.1-70b", 160.0),
    ("mixtral-8x7b", 100.0),
];

/// Where a requirement came from, for the step's detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirement {
    pub vram_gb: f64,
    pub source: String,
}

pub fn required_vram(model: &str, configured: Option<f64>, quantization: Option<&str>) -> Requirement {
    if let Some(gb) = configured {
        return Requirement { vram_gb: gb, source: "min_vram_gb".into() };
    }
    let lower = model.to_ascii_lowercase();
    if let Some((name, gb)) = KNOWN.iter().find(|(name, _)| lower.contains(name)) {
        let gb = gb / quantization_divisor(quantization);
        return Requirement { vram_gb: gb, source: format!("known model ({name})") };
    }
    match parameters_in_billions(&lower) {
        Some(billions) => {
            // 2 bytes a parameter (bf16), 20 % for activations and KV cache, 2 GB for CUDA.
            let gb = billions * 2.0 * 1.2 / quantization_divisor(quantization) + 2.0;
            Requirement { vram_gb: (gb * 10.0).ceil() / 10.0, source: format!("estimated from {billions}B parameters") }
        }
        None => Requirement { vram_gb: 16.0, source: "no size in the name; assumed 16 GB (set min_vram_gb)".into() },
    }
}

/// 4-bit quantization halves the weights twice, 8-bit once.
fn quantization_divisor(quantization: Option<&str>) -> f64 {
    let Some(q) = quantization.map(str::to_ascii_lowercase) else { return 1.0 };
    if ["4bit", "int4", "awq", "gptq", "q4", "nf4", "bnb"].iter().any(|p| q.contains(p)) {
        4.0
    } else if ["8bit", "int8", "fp8", "q8"].iter().any(|p| q.contains(p)) {
        2.0
    } else {
        1.0
    }
}

/// `7b`, `0.5b`, `8x7b` (experts multiply) in a name; the largest if several.
fn parameters_in_billions(name: &str) -> Option<f64> {
    let bytes = name.as_bytes();
    let mut best: Option<f64> = None;
    for (i, c) in bytes.iter().enumerate() {
        if *c != b'b' || i == 0 || bytes.get(i + 1).is_some_and(u8::is_ascii_alphanumeric) {
            continue;
        }
        let head = &name[..i];
        let start = head
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_ascii_digit() || *c == '.' || *c == 'x'))
            .map_or(0, |(p, c)| p + c.len_utf8());
        let text = &name[start..i];
        let value = text.split('x').map(str::parse::<f64>).try_fold(1.0, |acc, v| v.map(|v| acc * v)).ok();
        if let Some(v) = value.filter(|v| v.is_finite() && *v > 0.0) {
            best = Some(best.map_or(v, |b: f64| b.max(v)));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_then_known_then_estimated() {
        assert_eq!(required_vram("any", Some(12.0), None).vram_gb, 12.0);
        assert_eq!(required_vram("TinyLlama/TinyLlama-1.1B-Chat-v1.0", None, None).vram_gb, 4.0);
        let seven = required_vram("org/SomeModel-7B-Instruct", None, None);
        assert_eq!(seven.vram_gb, 18.8, "{seven:?}");
        let quantized = required_vram("org/SomeModel-7B-Instruct", None, Some("awq"));
        assert_eq!(quantized.vram_gb, 6.2);
        assert_eq!(required_vram("org/moe-8x7b", None, None).vram_gb, 136.4);
        assert_eq!(required_vram("org/no-size", None, None).vram_gb, 16.0);
    }

    #[test]
    fn sizes_are_found_only_as_words() {
        assert_eq!(parameters_in_billions("qwen2.5-0.5b-instruct"), Some(0.5));
        assert_eq!(parameters_in_billions("bigbird"), None);
        assert_eq!(parameters_in_billions("model-13b"), Some(13.0));
    }

    proptest::proptest! {
        #[test]
        fn any_name_gives_a_finite_positive_requirement(name in ".{0,64}", q in proptest::option::of(".{0,8}")) {
            let r = required_vram(&name, None, q.as_deref());
            proptest::prop_assert!(r.vram_gb.is_finite() && r.vram_gb > 0.0);
        }
    }
}
