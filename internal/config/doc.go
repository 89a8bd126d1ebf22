// Package config loads binvault's YAML configuration: strict keys, ${VAR}
// expansion, sizes and durations, defaults, and validation whose messages
// name the key and the fix. Secrets never appear in its errors.
package config
