//! Explanations of the syntax diagnostics, for `plec explain`.

/// (code, explanation) of every diagnostic the parser emits.
pub const CODES: &[(&str, &str)] = &[
    ("plec::unterminated-string", "A quoted string has no closing quote on its line. Text-format strings cannot span lines, so protobuf reports the problem somewhere later, often as an unknown field. Close the string with the quote it opened with; write `\\n` for a newline inside it. Example: `label_fields: \"clk` -> `label_fields: \"clk\"`."),
    ("plec::unclosed-bracket", "A `{`, `<` or `[` is never closed. protobuf would report the end of the file, or an unknown field in the wrong message when a later block is read as part of this one. plec points at the opening bracket. Add the missing `}`, `>` or `]` where the block should end."),
    ("plec::mismatched-bracket", "A closing bracket does not close anything that is open (for example `}` while only `[` is open and no `{` is). Remove it, or close the open bracket first."),
    ("plec::stray-bracket", "A closing bracket appears where nothing is open, usually one `}` too many at the end of a block. Remove it, or add the opening bracket it was meant to close."),
    ("plec::missing-value", "A field name is followed by `:` (or by nothing) but no value. Write `name: value` for scalars or `name { ... }` for messages, or remove the field. Example: `batch_size:` followed by the next field -> `batch_size: 1024`."),
    ("plec::malformed-number", "A token starts like a number but is not one: `1.2.3`, `09` (a leading 0 means octal, and 9 is not an octal digit), `12abc`, `1e`. Numbers are written `42`, `-7`, `0x1F`, `0.5`, `1e-6` or `2.5f`; quote the value if it is meant as text."),
    ("plec::bad-escape", "A string contains an escape protobuf does not accept, such as `\\xZZ` or an octal escape above `\\377`. Valid escapes: `\\n \\t \\r \\\\ \\' \\\" \\xHH \\NNN \\uHHHH`. Write `\\\\` for a literal backslash."),
    ("plec::expected-field", "Something other than a field name appears where a field should start, such as a bare value `2048` inside a block. Each entry is `name: value` or `name { ... }`; several values of a repeated field go in `[a, b]` or on separate `name: value` lines."),
    ("plec::syntax", "The text does not follow the protobuf text format at this point. Each entry is `name: value` or `name { ... }`, entries may be separated by `,` or `;`, lists are `[a, b]` without a trailing comma."),
    ("plec::upper-case-float-suffix", "A float written with an upper-case `F` suffix (`lr: 0.001F`). The protobuf C++ parser and Python protobuf 5 and later accept it, but TorchEasyRec pins Python protobuf 4 (through grpcio-tools<1.63), whose text parser strips only a lower-case `f` and fails with `Couldn't parse float: 0.001F` when TorchEasyRec reads the config. Write `0.001f` or just `0.001`."),
];
