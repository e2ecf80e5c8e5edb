//! `plec lsp`: a language server for config files over stdio.
//!
//! Built on `lsp-server` and `lsp-types` as rust-analyzer uses them: a
//! synchronous loop over one channel of messages, which fits a compiler
//! whose checks take milliseconds and need no async runtime. Documents are
//! held in memory as the editor sends them (full sync) and checked from
//! there, so an unsaved buffer is checked as it is. Checks are debounced:
//! a change schedules one [`DEBOUNCE`] later, and later changes move it.
//!
//! Requests: hover, completion, definition, document symbols, code actions
//! (did-you-mean quick fixes) and formatting ([`features`]).

mod diagnostics;
mod features;
mod scan;
mod schema;
mod text;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lsp_server::{Connection, ErrorCode, Message, Notification, Request, Response};
use lsp_types::notification::{
    DidChangeTextDocument, DidCloseTextDocument, DidOpenTextDocument, Notification as _,
    PublishDiagnostics,
};
use lsp_types::request::{
    CodeActionRequest, Completion, DocumentSymbolRequest, Formatting, GotoDefinition, HoverRequest,
    Request as _,
};
use lsp_types::{
    CodeActionProviderCapability, CompletionOptions, HoverProviderCapability, OneOf,
    PublishDiagnosticsParams, ServerCapabilities, TextDocumentSyncCapability, TextDocumentSyncKind,
    Uri,
};

use crate::schema::Schema;

use super::{Outcome, RunError};

/// Quiet time after the last change before a document is checked: long
/// enough to skip the states between keystrokes, short enough to feel live.
const DEBOUNCE: Duration = Duration::from_millis(150);

#[derive(Debug, clap::Args)]
pub struct LspArgs {
    /// Accepted for editors that pass it; stdio is the only transport.
    #[arg(long)]
    pub stdio: bool,
}

struct Document {
    text: String,
    version: i32,
}

struct Server {
    schema: Schema,
    connection: Connection,
    documents: HashMap<String, (Uri, Document)>,
    /// Documents waiting to be checked, and when.
    due: HashMap<String, Instant>,
}

pub(crate) fn execute(_args: &LspArgs) -> Result<Outcome, RunError> {
    let schema = Schema::builtin().map_err(|e| RunError::new(e.to_string()))?;
    let (connection, io_threads) = Connection::stdio();
    let capabilities = ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Kind(TextDocumentSyncKind::FULL)),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        completion_provider: Some(CompletionOptions {
            trigger_characters: Some(vec!["\"".to_string(), ":".to_string()]),
            ..Default::default()
        }),
        definition_provider: Some(OneOf::Left(true)),
        document_symbol_provider: Some(OneOf::Left(true)),
        code_action_provider: Some(CodeActionProviderCapability::Simple(true)),
        document_formatting_provider: Some(OneOf::Left(true)),
        ..Default::default()
    };
    let caps = serde_json::to_value(capabilities).map_err(|e| RunError::new(e.to_string()))?;
    connection
        .initialize(caps)
        .map_err(|e| RunError::new(format!("lsp initialization failed: {e}")))?;
    let mut server = Server {
        schema,
        connection,
        documents: HashMap::new(),
        due: HashMap::new(),
    };
    let result = server.run();
    drop(server);
    // A client that closed the pipe first leaves the writer thread with a
    // broken pipe: normal for a language server, so only noted.
    if let Err(e) = io_threads.join() {
        eprintln!("plec lsp: {e}");
    }
    result.map(|()| Outcome::Clean)
}

impl Server {
    fn run(&mut self) -> Result<(), RunError> {
        loop {
            let next_due = self.due.values().min().copied();
            let msg = match next_due {
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    match self.connection.receiver.recv_timeout(wait) {
                        Ok(m) => Some(m),
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(()),
                    }
                }
                None => match self.connection.receiver.recv() {
                    Ok(m) => Some(m),
                    Err(_) => return Ok(()),
                },
            };
            match msg {
                None => self.publish_due(),
                Some(Message::Request(req)) => {
                    // An error here is a client that left between
                    // `shutdown` and `exit`: the session is over all the same.
                    match self.connection.handle_shutdown(&req) {
                        Ok(false) => {}
                        Ok(true) | Err(_) => return Ok(()),
                    }
                    self.request(req);
                }
                Some(Message::Notification(n)) => self.notification(n),
                Some(Message::Response(_)) => {}
            }
        }
    }

    fn send(&self, msg: Message) {
        // The client hung up when this fails; the loop ends on the next read.
        let _ = self.connection.sender.send(msg);
    }

    fn publish_due(&mut self) {
        let now = Instant::now();
        let ready: Vec<String> = self
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in ready {
            self.due.remove(&key);
            let Some((uri, doc)) = self.documents.get(&key) else {
                continue;
            };
            let diagnostics = diagnostics::check(&self.schema, uri, &doc.text);
            let params = PublishDiagnosticsParams::new(uri.clone(), diagnostics, Some(doc.version));
            self.send(Message::Notification(Notification::new(
                PublishDiagnostics::METHOD.to_string(),
                params,
            )));
        }
    }

    fn notification(&mut self, n: Notification) {
        match n.method.as_str() {
            DidOpenTextDocument::METHOD => {
                if let Ok(p) =
                    serde_json::from_value::<lsp_types::DidOpenTextDocumentParams>(n.params)
                {
                    let key = p.text_document.uri.as_str().to_string();
                    let doc = Document {
                        text: p.text_document.text,
                        version: p.text_document.version,
                    };
                    self.documents
                        .insert(key.clone(), (p.text_document.uri, doc));
                    // A new document is checked at once.
                    self.due.insert(key, Instant::now());
                }
            }
            DidChangeTextDocument::METHOD => {
                if let Ok(p) =
                    serde_json::from_value::<lsp_types::DidChangeTextDocumentParams>(n.params)
                {
                    let key = p.text_document.uri.as_str().to_string();
                    // Full sync: the last change holds the whole text.
                    if let (Some(change), Some((_, doc))) = (
                        p.content_changes.into_iter().last(),
                        self.documents.get_mut(&key),
                    ) {
                        doc.text = change.text;
                        doc.version = p.text_document.version;
                        self.due.insert(key, Instant::now() + DEBOUNCE);
                    }
                }
            }
            DidCloseTextDocument::METHOD => {
                if let Ok(p) =
                    serde_json::from_value::<lsp_types::DidCloseTextDocumentParams>(n.params)
                {
                    let key = p.text_document.uri.as_str().to_string();
                    self.documents.remove(&key);
                    self.due.remove(&key);
                    let params =
                        PublishDiagnosticsParams::new(p.text_document.uri, Vec::new(), None);
                    self.send(Message::Notification(Notification::new(
                        PublishDiagnostics::METHOD.to_string(),
                        params,
                    )));
                }
            }
            _ => {}
        }
    }

    fn text(&self, uri: &Uri) -> Option<&str> {
        self.documents
            .get(uri.as_str())
            .map(|(_, d)| d.text.as_str())
    }

    fn request(&mut self, req: Request) {
        let id = req.id.clone();
        let result = match req.method.as_str() {
            HoverRequest::METHOD => self.handle::<lsp_types::HoverParams, _>(req, |s, p| {
                let tdp = &p.text_document_position_params;
                let text = s.text(&tdp.text_document.uri)?;
                features::hover(&s.schema, text, tdp.position)
            }),
            Completion::METHOD => self.handle::<lsp_types::CompletionParams, _>(req, |s, p| {
                let tdp = &p.text_document_position;
                let text = s.text(&tdp.text_document.uri)?;
                Some(features::completion(&s.schema, text, tdp.position))
            }),
            GotoDefinition::METHOD => {
                self.handle::<lsp_types::GotoDefinitionParams, _>(req, |s, p| {
                    let tdp = &p.text_document_position_params;
                    let text = s.text(&tdp.text_document.uri)?;
                    features::definition(&tdp.text_document.uri, text, tdp.position)
                })
            }
            DocumentSymbolRequest::METHOD => {
                self.handle::<lsp_types::DocumentSymbolParams, _>(req, |s, p| {
                    let text = s.text(&p.text_document.uri)?;
                    Some(features::symbols(text))
                })
            }
            CodeActionRequest::METHOD => {
                self.handle::<lsp_types::CodeActionParams, _>(req, |s, p| {
                    let text = s.text(&p.text_document.uri)?;
                    Some(features::code_actions(
                        &p.text_document.uri,
                        text,
                        &p.context.diagnostics,
                    ))
                })
            }
            Formatting::METHOD => {
                self.handle::<lsp_types::DocumentFormattingParams, _>(req, |s, p| {
                    let text = s.text(&p.text_document.uri)?;
                    features::formatting(text)
                })
            }
            _ => Err((
                ErrorCode::MethodNotFound,
                format!("unhandled method {}", req.method),
            )),
        };
        let response = match result {
            Ok(value) => Response::new_ok(id, value),
            Err((code, msg)) => Response::new_err(id, code as i32, msg),
        };
        self.send(Message::Response(response));
    }

    /// Decodes a request's params and runs `f`; its `None` is a JSON null.
    fn handle<P, R>(
        &self,
        req: Request,
        f: impl FnOnce(&Self, &P) -> Option<R>,
    ) -> Result<serde_json::Value, (ErrorCode, String)>
    where
        P: serde::de::DeserializeOwned,
        R: serde::Serialize,
    {
        let params: P = serde_json::from_value(req.params)
            .map_err(|e| (ErrorCode::InvalidParams, e.to_string()))?;
        serde_json::to_value(f(self, &params))
            .map_err(|e| (ErrorCode::InternalError, e.to_string()))
    }
}
