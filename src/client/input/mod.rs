//! Stage 1, inputs → validated config: [`table`] defines every input once
//! (name, default, help); [`cli`] reads flags and `INPUT_*` into strings;
//! [`config`] validates them into a typed [`config::Config`], with the value
//! syntaxes in [`headers`], [`json`], [`body`] and [`status`] (named files
//! are opened with [`crate::shared::regular_file`], which never blocks).
//! Nothing here sends anything; after this stage no input is a string.

pub mod body;
pub mod cli;
pub mod config;
pub mod headers;
pub mod json;
pub mod status;
pub mod table;
