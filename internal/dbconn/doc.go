// Package dbconn is what binvault knows about the servers it talks to, in
// one place: it turns mysql:// URLs into connections; reads a server's
// identity and binlog settings (Inspect); names the server errors binvault
// acts on, for both drivers it uses (IsAccessDenied, IsLockConflict,
// IsBinlogPurged, ...), so that no caller compares error numbers or
// searches error texts; reads the account's global privileges from SHOW
// GRANTS (ReadGrants), so that every preflight asks the same question the
// same way; quotes identifiers and strings; and turns errors into one-line
// messages a DBA can act on (Explain).
package dbconn
