package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/binvault/binvault/internal/dbconn"
	"github.com/binvault/binvault/internal/usage"
)

// configError marks a message as a configuration (usage) error.
func configError(msg string) error { return usage.Errorf("%s", msg) }

var (
	envRef        = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)
	secretEnvName = regexp.MustCompile(`(?i)pass|secret|key|token|cred`)
)

// decode walks the YAML tree itself instead of using yaml.v3's struct
// decoding, so every error can name the dotted key and its line, and so
// expanded secrets can be kept out of the messages.
func decode(data []byte, path string, lookup func(string) (string, bool), cfg *Config) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		// yaml.v3 quotes the offending text, which could be a secret.
		return configError(fmt.Sprintf("%s: not valid YAML: %s", path, scrubYAMLError(err)))
	}
	if len(root.Content) == 0 {
		return nil // empty file: defaults only, Validate says what is missing
	}
	d := &decoder{path: path, lookup: lookup, cfg: cfg}
	if err := d.value(root.Content[0], reflect.ValueOf(cfg).Elem(), ""); err != nil {
		return err
	}
	// DSN passwords written literally are secrets too.
	for _, dsn := range []string{cfg.Source.DSN, replicaDSN(cfg)} {
		if ps, err := dbconn.ParseHosts(dsn); err == nil && ps[0].Password != "" {
			cfg.secrets = append(cfg.secrets, ps[0].Password)
		}
	}
	return nil
}

func replicaDSN(cfg *Config) string {
	if cfg.Replica == nil {
		return ""
	}
	return cfg.Replica.DSN
}

func scrubYAMLError(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	// Messages look like "line 3: mapping values are not allowed in this context"
	// or "... cannot unmarshal !!str `secret` into ...": drop quoted values.
	return regexp.MustCompile("`[^`]*`").ReplaceAllString(msg, "`…`")
}

type decoder struct {
	path   string
	lookup func(string) (string, bool)
	cfg    *Config
}

func (d *decoder) errorf(n *yaml.Node, key, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	return configError(Redact(fmt.Sprintf("%s:%d: %s: %s", d.path, n.Line, key, msg), d.cfg.secrets))
}

func (d *decoder) value(n *yaml.Node, v reflect.Value, key string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Tag == "!!null" && v.Kind() != reflect.String {
		return nil // "key:" with nothing: keep the default
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return d.value(n, v.Elem(), key)
	case reflect.Struct:
		return d.mapping(n, v, key)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return d.errorf(n, key, "expected a list")
		}
		out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if err := d.value(item, out.Index(i), fmt.Sprintf("%s[%d]", key, i)); err != nil {
				return err
			}
		}
		v.Set(out)
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return d.errorf(n, key, "expected a single value, not a %s", kindName(n.Kind))
	}
	s, err := d.expand(n, key)
	if err != nil {
		return err
	}
	if u, ok := v.Addr().Interface().(interface{ parse(string) error }); ok {
		if err := u.parse(s); err != nil {
			return d.errorf(n, key, "%v", err)
		}
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		if n.Tag == "!!null" {
			s = ""
		}
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return d.errorf(n, key, "%q is not true or false", s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return d.errorf(n, key, "%q is not a whole number", s)
		}
		v.SetInt(i)
	case reflect.Uint32:
		u, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return d.errorf(n, key, "%q is not a whole number between 0 and 4294967295", s)
		}
		v.SetUint(u)
	default:
		return fmt.Errorf("config: field %s has unsupported kind %s", key, v.Kind())
	}
	return nil
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, prefix string) error {
	if n.Kind != yaml.MappingNode {
		return d.errorf(n, orRoot(prefix), "expected a section of keys, not a %s", kindName(n.Kind))
	}
	fields := map[string]int{}
	var names []string
	for i := 0; i < v.NumField(); i++ {
		tag := v.Type().Field(i).Tag.Get("yaml")
		if tag == "" || tag == "-" {
			continue
		}
		fields[tag] = i
		names = append(names, tag)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := join(prefix, k.Value)
		idx, ok := fields[k.Value]
		if !ok {
			hint := ""
			if near := nearest(k.Value, names); near != "" {
				hint = fmt.Sprintf(" (did you mean %q?)", join(prefix, near))
			}
			return configError(fmt.Sprintf("%s:%d: unknown key %q%s; configs/binvault.example.yaml lists every key", d.path, k.Line, key, hint))
		}
		if seen[k.Value] {
			return d.errorf(k, key, "appears twice")
		}
		seen[k.Value] = true
		if err := d.value(val, v.Field(idx), key); err != nil {
			return err
		}
	}
	return nil
}

// expand replaces ${VAR} with the environment's value; an unset variable is
// an error, since an empty password or host is never what was meant.
func (d *decoder) expand(n *yaml.Node, key string) (string, error) {
	var missing []string
	out := envRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
		name := envRef.FindStringSubmatch(ref)[1]
		val, ok := d.lookup(name)
		if !ok {
			missing = append(missing, name)
			return ""
		}
		if secretEnvName.MatchString(name) && val != "" {
			d.cfg.secrets = append(d.cfg.secrets, val)
		}
		return val
	})
	if len(missing) > 0 {
		return "", d.errorf(n, key, "uses ${%s}, which is not set in the environment: export it or write the value", missing[0])
	}
	return out, nil
}

func join(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}

func orRoot(k string) string {
	if k == "" {
		return "(top level)"
	}
	return k
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "section"
	case yaml.SequenceNode:
		return "list"
	default:
		return "value"
	}
}

// nearest returns the candidate within edit distance 2 of s, if any.
func nearest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// Keys lists every dotted key the configuration accepts, for documentation checks.
func Keys() []string {
	var out []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		for i := 0; i < t.NumField(); i++ {
			tag := t.Field(i).Tag.Get("yaml")
			if tag == "" || tag == "-" {
				continue
			}
			ft := t.Field(i).Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(ft, join(prefix, tag))
				continue
			}
			out = append(out, join(prefix, tag))
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	return out
}
