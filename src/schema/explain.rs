//! Explanations of the schema diagnostics, for `plec explain`.

/// (code, explanation) of every diagnostic the binder emits.
pub const CODES: &[(&str, &str)] = &[
    ("plec::unknown-field", "The message has no field of this name (often a typo, or a field placed in the wrong block after a missing `}`). TorchEasyRec stops at the first such field with `Message type ... has no field named ...`; plec reports all of them and suggests the nearest known names. Fix the spelling or move the field to the block that defines it."),
    ("plec::wrong-value-kind", "The value is of another kind than the field: a number or bare word for a string field (quote it), a scalar for a message field (write `name { ... }`), a block for a scalar field, a string for a number. Give the field the kind of value its type needs."),
    ("plec::float-for-integer", "An integer field was given a number with a decimal point or exponent (`128.5`, `1.0`, `1e3`). protobuf rejects it. Write a whole number."),
    ("plec::negative-unsigned", "An unsigned field (uint32, uint64) was given a negative number. Give 0 or more."),
    ("plec::integer-out-of-range", "The integer does not fit the field's type (for example 4294967296 for a uint32). The help gives the range."),
    ("plec::unknown-enum-value", "The value is not a name (or number) of the field's enum. Enum names are case-sensitive; the help lists the valid values and the closest one."),
    ("plec::invalid-utf8", "A string field holds bytes that are not valid UTF-8 (for example from a `\\xff` escape). String fields hold text; use `\\u` escapes for non-ASCII characters."),
    ("plec::invalid-bool", "A boolean field takes `true` or `false` (protobuf also accepts `t`, `f`, `True`, `False`, `1` and `0`). `yes`, `TRUE` or quoted strings are rejected."),
    ("plec::duplicate-field", "A singular field is given twice in one message. TorchEasyRec reads configs with protobuf's Merge, which silently keeps the last value (and merges two blocks of a message field field by field). Almost always a copy-paste mistake: keep one."),
    ("plec::oneof-conflict", "Two members of one oneof are set, such as `ple { }` and `mmoe { }` in one model_config, or `id_feature` and `raw_feature` in one feature_configs entry. protobuf's text-format Merge, which TorchEasyRec and EasyRec read configs with, silently keeps only the later one and drops the other (protobuf's stricter Parse rejects the file). Keep one."),
    ("plec::not-repeated", "A list `[a, b]` was given to a field that holds one value. Give a single value."),
    ("plec::missing-colon", "A scalar field needs `:` between its name and value (`batch_size: 1024`); only message fields may omit it (`data_config { ... }`)."),
    ("plec::nested-list", "A list contains a list. Text format lists are flat: `[1, 2, 3]`."),
    (super::dialect::CODE, super::dialect::EXPLAIN),
    ("plec::unchecked-block", "A block whose message the schema marks `option (plec.unchecked) = true`: plec knows it by name only, parses its contents but does not check them. The built-in TorchEasyRec schema models every message, so this appears only with a user's own schema (`--proto-path`). Not an error."),
];
