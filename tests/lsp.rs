//! `plec lsp` driven as an editor drives it: JSON-RPC with Content-Length
//! framing over the child's stdin/stdout. One session opens a config with
//! a misspelled feature, asks for hover, completion, definition, symbols,
//! a quick fix and formatting, edits the buffer (unsaved) and shuts down.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use common::PLEC;
use serde_json::{json, Value};

struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: i64,
    /// Notifications received while waiting for responses.
    notes: Vec<Value>,
}

impl Client {
    fn start() -> Self {
        let mut child = Command::new(PLEC)
            .arg("lsp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("plec lsp starts");
        // A hung server must not hang the test run.
        let pid = child.id();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(120));
            let _ = Command::new("kill").arg(pid.to_string()).status();
        });
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Client {
            child,
            stdin,
            stdout,
            next_id: 1,
            notes: Vec::new(),
        }
    }

    fn send(&mut self, msg: Value) {
        let body = msg.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).expect("write");
        self.stdin.flush().expect("flush");
    }

    fn read(&mut self) -> Value {
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).expect("read header");
            assert!(n > 0, "server closed its output");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.strip_prefix("Content-Length: ") {
                len = v.parse().expect("length");
            }
        }
        let mut body = vec![0u8; len];
        self.stdout.read_exact(&mut body).expect("read body");
        serde_json::from_slice(&body).expect("JSON body")
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let msg = self.read();
            if msg["id"] == json!(id) {
                assert!(msg.get("error").is_none(), "{method}: {msg}");
                return msg["result"].clone();
            }
            self.notes.push(msg);
        }
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// The diagnostics published for document version `version`.
    fn diagnostics(&mut self, version: i64) -> Vec<Value> {
        loop {
            let found = self.notes.iter().position(|n| {
                n["method"] == "textDocument/publishDiagnostics"
                    && n["params"]["version"] == version
            });
            if let Some(i) = found {
                let note = self.notes.remove(i);
                return note["params"]["diagnostics"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
            }
            let msg = self.read();
            self.notes.push(msg);
        }
    }
}

const URI: &str = "file:///work/model.config";

/// Line and UTF-16 column of the `nth` occurrence of `needle`, plus `delta`.
fn pos(text: &str, needle: &str, delta: usize) -> Value {
    let at = text.find(needle).expect("needle") + delta;
    let line = text[..at].matches('\n').count();
    let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1);
    json!({"line": line, "character": col})
}

/// The labels of a completion reply.
fn completion_labels(items: &Value) -> Vec<&str> {
    items
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["label"].as_str())
        .collect()
}

/// The markdown of a hover reply (empty when there is none).
fn hover_value(h: &Value) -> String {
    h["contents"]["value"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn doc(position: Value) -> Value {
    json!({"textDocument": {"uri": URI}, "position": position})
}

#[test]
fn an_editor_session() {
    let text = std::fs::read_to_string("golden/lint/unknown-feature.config").expect("case");
    let mut c = Client::start();
    let init = c.request(
        "initialize",
        json!({"processId": null, "rootUri": null, "capabilities": {}}),
    );
    let caps = &init["capabilities"];
    for cap in [
        "hoverProvider",
        "completionProvider",
        "definitionProvider",
        "documentSymbolProvider",
        "codeActionProvider",
        "documentFormattingProvider",
    ] {
        assert!(!caps[cap].is_null(), "no {cap}: {init}");
    }
    c.notify("initialized", json!({}));
    c.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": URI, "languageId": "plec", "version": 1, "text": text}}),
    );

    // Diagnostics: everything plec check finds, with codes and help.
    let diags = c.diagnostics(1);
    let unknown = diags
        .iter()
        .find(|d| d["code"] == "plec::unknown-feature")
        .unwrap_or_else(|| panic!("no unknown-feature in {diags:?}"))
        .clone();
    assert_eq!(unknown["range"]["start"], pos(&text, "\"cat_id\"", 0));
    assert!(unknown["message"]
        .as_str()
        .unwrap_or_default()
        .contains("did you mean `cate_id`?"));
    assert!(diags.iter().any(|d| d["code"] == "plec::unused-feature"));

    // Hover on a field name: its type, message and .proto comment.
    let h = c.request("textDocument/hover", doc(pos(&text, "hash_bucket_size", 3)));
    let hover = hover_value(&h);
    assert!(
        hover.contains("**hash_bucket_size**") && hover.contains("IdFeature"),
        "{hover}"
    );
    // Hover on a feature name: its definition.
    let h = c.request(
        "textDocument/hover",
        doc(pos(&text, "feature_names: \"pid\"", 17)),
    );
    let hover = hover_value(&h);
    assert!(
        hover.contains("context:pid") && hover.contains("hash_bucket_size: 20"),
        "{hover}"
    );

    // Completion: field names valid in the block, enum values, feature names.
    let items = c.request(
        "textDocument/completion",
        doc(pos(&text, "    group_type: DEEP", 4)),
    );
    let labels = completion_labels(&items);
    assert!(
        labels.contains(&"feature_names") && labels.contains(&"group_type"),
        "{labels:?}"
    );
    assert!(!labels.contains(&"hash_bucket_size"), "{labels:?}");
    let items = c.request(
        "textDocument/completion",
        doc(pos(&text, "group_type: DEEP", 12)),
    );
    let labels = completion_labels(&items);
    assert!(
        labels.contains(&"DEEP") && labels.contains(&"WIDE"),
        "{labels:?}"
    );
    let items = c.request("textDocument/completion", doc(pos(&text, "\"cat_id\"", 1)));
    let labels = completion_labels(&items);
    assert!(
        labels.contains(&"cate_id") && labels.contains(&"user_id"),
        "{labels:?}"
    );

    // Go to definition: a feature_names entry to its feature_name.
    let d = c.request(
        "textDocument/definition",
        doc(pos(&text, "feature_names: \"pid\"", 17)),
    );
    assert_eq!(d["uri"], URI);
    assert_eq!(d["range"]["start"], pos(&text, "\"pid\"", 0));

    // Document symbols: features, groups, towers.
    let s = c.request(
        "textDocument/documentSymbol",
        json!({"textDocument": {"uri": URI}}),
    );
    let names: Vec<&str> = s
        .as_array()
        .expect("symbols")
        .iter()
        .filter_map(|x| x["name"].as_str())
        .collect();
    assert!(
        names.starts_with(&["user_id", "age_level"]) && names.contains(&"all"),
        "{names:?}"
    );

    // Quick fix: the did-you-mean suggestion as an edit.
    let actions = c.request(
        "textDocument/codeAction",
        json!({"textDocument": {"uri": URI}, "range": unknown["range"], "context": {"diagnostics": [unknown]}}),
    );
    let edit = &actions[0]["edit"]["changes"][URI][0];
    assert_eq!(edit["newText"], "\"cate_id\"", "{actions}");
    assert_eq!(actions[0]["kind"], "quickfix");

    // Formatting: one edit with plec fmt's text.
    let edits = c.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": URI}, "options": {"tabSize": 2, "insertSpaces": true}}),
    );
    assert!(edits[0]["newText"]
        .as_str()
        .unwrap_or_default()
        .contains("constant_learning_rate {}"));

    // An unsaved edit that applies the fix: checked from memory.
    let fixed = text.replace("\"cat_id\"", "\"cate_id\"");
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": URI, "version": 2}, "contentChanges": [{"text": fixed}]}),
    );
    let diags = c.diagnostics(2);
    assert!(
        !diags.iter().any(|d| d["code"] == "plec::unknown-feature"),
        "{diags:?}"
    );

    let r = c.request("shutdown", Value::Null);
    assert!(r.is_null());
    c.notify("exit", Value::Null);
    let status = c.child.wait().expect("exit");
    assert!(status.success(), "{status:?}");
}
