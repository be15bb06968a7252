//! `ringecho bench`: a verifying load generator (work in progress).
