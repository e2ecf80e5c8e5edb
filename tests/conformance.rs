//! Conformance with protobuf itself: for every example and a few hundred
//! generated variants (mutations of the examples plus text-format edge
//! cases), plec's accept/reject must equal Python protobuf's
//! `text_format.Merge` against the project's own `proto/`, and when both
//! accept, the binary encoding must be byte for byte the same.
//!
//! Needs `python3` with the packages in tests/conformance/requirements.txt
//! (CI installs them). Only syntax and schema are compared: semantic lint
//! is plec's own addition.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use plec::schema::{bind, Schema};
use plec::syntax::parse;
use prost::Message;

/// Text-format edge cases, each a whole config: (name, text).
const EDGE_CASES: &[(&str, &str)] = &[
    ("hex_int", "data_config { batch_size: 0x10 }"),
    ("octal_int", "data_config { batch_size: 010 }"),
    ("bad_octal", "data_config { batch_size: 08 }"),
    ("negative_unsigned", "data_config { batch_size: -1 }"),
    ("minus_zero_unsigned", "data_config { batch_size: -0 }"),
    ("uint32_overflow", "data_config { batch_size: 4294967296 }"),
    ("uint32_max", "data_config { batch_size: 4294967295 }"),
    ("float_for_int", "data_config { batch_size: 1.0 }"),
    ("exp_for_int", "data_config { batch_size: 1e3 }"),
    ("huge_int", "data_config { batch_size: 99999999999999999999999 }"),
    ("float_plain", "train_config { sparse_optimizer { adagrad_optimizer { lr: 0.5 } } }"),
    ("float_int", "train_config { sparse_optimizer { adagrad_optimizer { lr: 1 } } }"),
    ("float_dot_start", "train_config { sparse_optimizer { adagrad_optimizer { lr: .5 } } }"),
    ("float_dot_end", "train_config { sparse_optimizer { adagrad_optimizer { lr: 5. } } }"),
    ("float_suffix", "train_config { sparse_optimizer { adagrad_optimizer { lr: 1.5f } } }"),
    ("float_suffix_upper", "train_config { sparse_optimizer { adagrad_optimizer { lr: 2F } } }"),
    ("float_exp", "train_config { sparse_optimizer { adagrad_optimizer { lr: 1e-6 } } }"),
    ("float_exp_upper", "train_config { sparse_optimizer { adagrad_optimizer { lr: 2.5E+3 } } }"),
    ("float_inf", "train_config { sparse_optimizer { adagrad_optimizer { lr: inf } } }"),
    ("float_neg_inf", "train_config { sparse_optimizer { adagrad_optimizer { lr: -inf } } }"),
    ("float_infinity", "train_config { sparse_optimizer { adagrad_optimizer { lr: Infinity } } }"),
    ("float_nan", "train_config { sparse_optimizer { adagrad_optimizer { lr: nan } } }"),
    ("float_huge", "train_config { sparse_optimizer { adagrad_optimizer { lr: 1e400 } } }"),
    ("float_word", "train_config { sparse_optimizer { adagrad_optimizer { lr: fast } } }"),
    ("float_string", "train_config { sparse_optimizer { adagrad_optimizer { lr: \"0.1\" } } }"),
    ("float_bad", "train_config { sparse_optimizer { adagrad_optimizer { lr: 1.2.3 } } }"),
    ("bool_true", "data_config { shuffle: true }"),
    ("bool_t", "data_config { shuffle: t }"),
    ("bool_True", "data_config { shuffle: True }"),
    ("bool_1", "data_config { shuffle: 1 }"),
    ("bool_0", "data_config { shuffle: 0 }"),
    ("bool_False", "data_config { shuffle: False }"),
    ("bool_f", "data_config { shuffle: f }"),
    ("bool_yes", "data_config { shuffle: yes }"),
    ("bool_2", "data_config { shuffle: 2 }"),
    ("bool_TRUE", "data_config { shuffle: TRUE }"),
    ("bool_string", "data_config { shuffle: \"true\" }"),
    ("string_concat", "model_dir: 'a' \"b\" 'c'"),
    ("string_escapes", "model_dir: \"\\x41\\101\\n\\t\\\\\\'\\\"\""),
    ("string_unquoted", "model_dir: experiments"),
    ("string_number", "model_dir: 12"),
    ("string_invalid_utf8", "model_dir: \"\\xff\""),
    ("string_unterminated", "model_dir: \"abc\ntrain_input_path: \"x\""),
    ("string_single_quote", "model_dir: 'it\\'s'"),
    ("enum_name", "data_config { dataset_type: ParquetDataset }"),
    ("enum_number", "data_config { dataset_type: 2 }"),
    ("enum_bad_number", "data_config { dataset_type: 999 }"),
    ("enum_bad_name", "data_config { dataset_type: parquetdataset }"),
    ("enum_string", "data_config { dataset_type: \"ParquetDataset\" }"),
    ("msg_colon", "data_config: { batch_size: 1 }"),
    ("msg_angle", "data_config < batch_size: 1 >"),
    ("msg_angle_colon", "data_config: < batch_size: 1 >"),
    ("msg_list_singular", "data_config [ { batch_size: 1 } ]"),
    ("msg_scalar", "data_config: 5"),
    ("scalar_msg", "model_dir { }"),
    ("repeated_msg_list", "feature_configs [ { id_feature { feature_name: \"a\" } }, { raw_feature { feature_name: \"b\" } } ]"),
    ("repeated_msg_list_colon", "feature_configs: [ { id_feature { feature_name: \"a\" } } ]"),
    ("repeated_msg_empty_list", "feature_configs: []"),
    ("repeated_scalar_list", "data_config { label_fields: [\"a\", \"b\"] }"),
    ("repeated_scalar_list_no_colon", "data_config { label_fields [\"a\"] }"),
    ("repeated_scalar_empty_list", "data_config { label_fields: [] }"),
    ("repeated_scalar_trailing_comma", "data_config { label_fields: [\"a\",] }"),
    ("repeated_scalar_lines", "data_config { label_fields: \"a\" label_fields: \"b\" }"),
    ("nested_list", "data_config { label_fields: [[\"a\"]] }"),
    ("separators", "data_config { batch_size: 1; shuffle: true, label_fields: \"x\"; }"),
    ("double_separator", "data_config { batch_size: 1;; }"),
    ("leading_separator", "data_config { ; batch_size: 1 }"),
    ("comments_everywhere", "# top\ndata_config # a\n{ # b\n batch_size: # c\n 1 # d\n} # e\n"),
    ("empty_file", ""),
    ("only_comment", "# nothing here\n"),
    ("duplicate_message", "data_config { batch_size: 1 } data_config { shuffle: true }"),
    ("duplicate_scalar", "model_dir: \"a\" model_dir: \"b\""),
    ("unknown_field", "data_config { batch_sise: 1 }"),
    ("unknown_top", "model_confg { }"),
    ("extension", "[tzrec.ext] { }"),
    ("any_url", "[type.googleapis.com/tzrec.protos.DataConfig] { }"),
    ("oneof_conflict", "model_config { ple { } mmoe { } }"),
    ("oneof_same_twice", "model_config { ple { } ple { } }"),
    ("feature_oneof_conflict", "feature_configs { id_feature { } raw_feature { } }"),
    ("missing_value", "data_config { batch_size: }"),
    ("missing_value_name_only", "data_config { batch_size }"),
    ("missing_colon_scalar", "data_config { batch_size 1 }"),
    ("unclosed_brace", "data_config { batch_size: 1"),
    ("stray_brace", "data_config { batch_size: 1 } }"),
    ("mismatched_bracket", "data_config { batch_size: 1 >"),
    ("number_as_name", "data_config { 5: 1 }"),
    ("value_then_junk", "data_config { batch_size: 1 2 }"),
    ("int32_min", "model_config { num_class: -2147483648 }"),
    ("int32_underflow", "model_config { num_class: -2147483649 }"),
    ("plus_sign", "data_config { batch_size: +5 }"),
    ("hex_upper", "data_config { batch_size: 0X1f }"),
    ("hex_float_field", "train_config { sparse_optimizer { adagrad_optimizer { lr: 0x10 } } }"),
    ("neg_hex", "model_config { num_class: -0x10 }"),
    ("neg_nan", "train_config { sparse_optimizer { adagrad_optimizer { lr: -nan } } }"),
    ("nan_suffix", "train_config { sparse_optimizer { adagrad_optimizer { lr: nanf } } }"),
    ("inf_suffix", "train_config { sparse_optimizer { adagrad_optimizer { lr: inff } } }"),
    ("whitespace_variety", "data_config\t{\r\n\x0bbatch_size:\x0c1}"),
    ("vocab_map", "feature_configs { id_feature { feature_name: \"a\" vocab_dict { key: \"x\" value: 2 } } }"),
    ("vocab_map_list", "feature_configs { id_feature { vocab_dict: [ { key: \"x\" value: 2 } ] } }"),
    ("map_bad_key", "feature_configs { id_feature { vocab_dict { key: 1 value: 2 } } }"),
    ("unicode_string", "model_dir: \"模型\""),
    ("deep_nesting", "model_config { ple { task_towers { mlp { hidden_units: [1, 2, 3] dropout_ratio: [0.1, 0.2] activation: \"nn.ReLU\" } } } }"),
];

/// Deterministic xorshift, so the generated variants are the same each run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One random edit of a valid config.
fn mutate(text: &str, rng: &mut Rng) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let i = rng.below(lines.len());
    let line = lines[i];
    let mut out: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    match rng.below(16) {
        0 => {
            out.remove(i);
        }
        1 => out.insert(i, line.to_string()),
        2 => out[i] = line.replace(':', ""),
        3 => out[i] = line.replace('{', "<").replace('}', ">"),
        4 => out[i] = format!("{line} # comment"),
        5 => out[i] = format!("{line};"),
        6 => out[i] = format!("{line},"),
        7 => out[i] = line.replacen('_', "", 1),
        8 => out[i] = line.replace('"', "'"),
        9 => {
            if let Some(d) = line.find(|c: char| c.is_ascii_digit()) {
                let mut s = line.to_string();
                let insert = ["-", ".5", "e3", "x", "0x", "9999999999999", "f"][rng.below(7)];
                s.insert_str(d + 1, insert);
                out[i] = s;
            }
        }
        10 => out[i] = line.replace("true", ["t", "True", "1", "yes"][rng.below(4)]),
        11 => out[i] = line.replace('"', ""),
        12 => {
            let j = rng.below(lines.len());
            out.swap(i, j);
        }
        13 => out[i] = line.replace(": ", ": [").replace('\n', "") + "]",
        14 => {
            if let Some(q) = line.find('"') {
                let mut s = line.to_string();
                s.insert_str(
                    q + 1,
                    ["\\n", "\\x41", "\\101", "\\\\", "é", "\\t"][rng.below(6)],
                );
                out[i] = s;
            }
        }
        _ => out[i] = line.replace("FG_NORMAL", ["FG_NONE", "FG_NOPE", "2", "7"][rng.below(4)]),
    }
    out.join("\n")
}

struct Case {
    name: String,
    text: String,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut examples: Vec<PathBuf> = std::fs::read_dir("examples")
        .expect("examples dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "config"))
        .collect();
    examples.sort();
    let texts: Vec<String> = examples
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read example"))
        .collect();
    for (p, t) in examples.iter().zip(&texts) {
        cases.push(Case {
            name: p.display().to_string(),
            text: t.clone(),
        });
    }
    for (name, text) in EDGE_CASES {
        cases.push(Case {
            name: format!("edge_{name}"),
            text: text.to_string(),
        });
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for k in 0..240 {
        let base = &texts[k % texts.len()];
        let mut text = mutate(base, &mut rng);
        if rng.below(3) == 0 {
            text = mutate(&text, &mut rng);
        }
        cases.push(Case {
            name: format!("mutant_{k:03}"),
            text,
        });
    }
    cases
}

#[derive(serde::Deserialize)]
struct Oracle {
    file: String,
    ok: bool,
    error: String,
    hex: String,
}

fn run_oracle(paths: &[PathBuf]) -> Vec<Oracle> {
    let mut child = Command::new("python3")
        .arg("tests/conformance/merge.py")
        .arg("proto")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 must be installed (see tests/conformance/requirements.txt)");
    {
        let stdin = child.stdin.as_mut().expect("stdin");
        for p in paths {
            writeln!(stdin, "{}", p.display()).expect("write path");
        }
    }
    let out = child.wait_with_output().expect("oracle output");
    assert!(
        out.status.success(),
        "the protobuf oracle failed; install tests/conformance/requirements.txt (pip install -r ...)"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("oracle line {l:?}: {e}")))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn accept_reject_and_bytes_match_python_protobuf() {
    let schema = Schema::builtin().expect("schema");
    let cases = cases();
    assert!(cases.len() >= 300, "{} cases", cases.len());
    let dir = tempfile::tempdir().expect("tempdir");
    let paths: Vec<PathBuf> = cases
        .iter()
        .map(|c| {
            let p = dir
                .path()
                .join(format!("{}.config", c.name.replace('/', "_")));
            std::fs::write(&p, &c.text).expect("write case");
            p
        })
        .collect();
    let oracle = run_oracle(&paths);
    assert_eq!(oracle.len(), cases.len());
    let mut mismatches = Vec::new();
    let mut accepted = 0;
    let mut stricter = 0;
    for ((case, path), truth) in cases.iter().zip(&paths).zip(&oracle) {
        assert_eq!(Path::new(&truth.file), path.as_path());
        let parsed = parse(&case.text);
        let mut errors: Vec<String> = parsed
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| format!("{}: {}", d.code, d.message))
            .collect();
        let mut encoded = None;
        let mut unchecked = false;
        if let Some(doc) = &parsed.document {
            let bound = bind(&schema, doc, &case.text);
            errors.extend(
                bound
                    .diagnostics
                    .iter()
                    .filter(|d| d.is_error())
                    .map(|d| format!("{}: {}", d.code, d.message)),
            );
            unchecked = !bound.unchecked.is_empty();
            encoded = Some(bound.message.encode_to_vec());
        }
        // Deliberate strictness, documented in semantics.md: protobuf's Merge
        // silently keeps the later member of a oneof; plec reports it.
        let only_oneof =
            !errors.is_empty() && errors.iter().all(|e| e.starts_with("plec::oneof-conflict"));
        if only_oneof && truth.ok {
            stricter += 1;
            continue;
        }
        let plec_ok = errors.is_empty();
        if unchecked {
            continue;
        }
        if plec_ok != truth.ok {
            mismatches.push(format!(
                "{}: plec {} ({}), protobuf {} ({})\n---\n{}\n---",
                case.name,
                if plec_ok { "accepts" } else { "rejects" },
                errors.join("; "),
                if truth.ok { "accepts" } else { "rejects" },
                truth.error,
                case.text.chars().take(400).collect::<String>()
            ));
        } else if plec_ok {
            accepted += 1;
            let ours = hex(&encoded.unwrap_or_default());
            if ours != truth.hex {
                mismatches.push(format!(
                    "{}: encodings differ\n plec:     {ours}\n protobuf: {}",
                    case.name, truth.hex
                ));
            }
        }
    }
    assert!(
        stricter <= 3,
        "unexpected number of oneof-only differences: {stricter}"
    );
    assert!(
        accepted >= 20,
        "too few accepted cases to compare bytes: {accepted}"
    );
    assert!(
        mismatches.is_empty(),
        "{} of {} cases disagree with protobuf:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
}
