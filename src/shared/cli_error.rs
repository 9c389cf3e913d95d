//! Command-line errors in words that never quote a value, for both
//! binaries: clap's own messages repeat the offending value, which may be a
//! password in a URL or half of an unquoted credential.

/// A command-line error in words that never quote a value: an unexpected
/// word may be half of a credential (`-H Authorization: Bearer s3cret`
/// unquoted). Option names are quoted; they are never secret.
pub fn describe(error: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let context = |kind| error.get(kind).map(ToString::to_string);
    let option = context(ContextKind::InvalidArg)
        .filter(|arg| arg.starts_with('-'))
        .map(|arg| arg.split(' ').next().unwrap_or_default().to_owned());
    let suggestion = match error.get(ContextKind::SuggestedArg) {
        Some(ContextValue::String(s)) => format!("; did you mean `{s}`?"),
        _ => String::new(),
    };
    match (error.kind(), option) {
        (ErrorKind::UnknownArgument, Some(option)) => {
            format!("unknown option `{option}`{suggestion}; see --help")
        }
        (ErrorKind::UnknownArgument | ErrorKind::InvalidSubcommand, None) => {
            "an unexpected value on the command line (not shown: it may be a secret); give each \
             value right after its option, and quote values that contain spaces"
                .to_owned()
        }
        (ErrorKind::InvalidValue, Some(option)) => {
            let valid = match error.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(values)) => {
                    format!("; expected one of {}", values.join(", "))
                }
                _ => String::new(),
            };
            format!("`{option}` has a missing or invalid value{valid}")
        }
        // The parser's own message: this program's, which never quotes a
        // secret (a URL is shown redacted).
        (ErrorKind::ValueValidation, Some(option)) => match std::error::Error::source(error) {
            Some(why) => format!("`{option}`: {why}"),
            None => format!("`{option}` has an invalid value; see --help"),
        },
        (ErrorKind::MissingRequiredArgument, Some(option)) => {
            format!("`{option}` is required (or its environment variable); see --help")
        }
        (kind, Some(option)) => format!("`{option}`: {kind}; see --help"),
        (kind, None) => format!("{kind}; see --help"),
    }
}
