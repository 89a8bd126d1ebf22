// Package open turns a storage URL from the configuration into a Store.
package open
