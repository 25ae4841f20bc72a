package plugin

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// The plugin's configuration table is kept in one place, the Config struct:
// each field's json name, Go type and tags role (manage, enforce or both),
// default (JSON; absent when there is none) and doc (one line). The tables
// in this package's doc (doc.go) and in README.md are generated from it:
//
//	go generate ./plugin
//
// and TestConfigTables fails when a checked-in table differs. schema.lua is
// written by hand for Kong; TestSchemaLuaFieldsAndDefaults checks its
// fields and defaults against Config (and kong's TestSchemaLuaMatchesDump
// its types against `keygate -dump`).

var updateTables = flag.Bool("update-config-tables", false, "rewrite the config tables of doc.go and README.md from Config")

type configRow struct {
	name, role, typ, def, doc string
	goName                    string
}

// configRows reads the table from Config.
func configRows(t *testing.T) []configRow {
	t.Helper()
	var rows []configRow
	ct := reflect.TypeOf(Config{})
	for i := 0; i < ct.NumField(); i++ {
		f := ct.Field(i)
		if !f.IsExported() {
			continue
		}
		r := configRow{name: f.Tag.Get("json"), role: f.Tag.Get("role"), def: f.Tag.Get("default"), doc: f.Tag.Get("doc"), typ: schemaType(f.Type), goName: f.Name}
		if r.name == "" || strings.Contains(r.name, ",") {
			t.Errorf("Config.%s: json tag must be the plain field name (no options: go-pdk reads it)", f.Name)
		}
		switch r.role {
		case RoleManage, RoleEnforce, "both":
		default:
			t.Errorf("Config.%s: role tag must be manage, enforce or both, not %q", f.Name, r.role)
		}
		if r.doc == "" || strings.ContainsAny(r.doc, "|\n") {
			t.Errorf("Config.%s: doc tag must be one line without '|'", f.Name)
		}
		if _, ok := f.Tag.Lookup("default"); ok && !json.Valid([]byte(r.def)) {
			t.Errorf("Config.%s: default tag %q is not JSON", f.Name, r.def)
		}
		rows = append(rows, r)
	}
	return rows
}

// schemaType is the Kong schema type of a Config field's Go type.
func schemaType(t reflect.Type) string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Int, reflect.Int32:
		return "integer"
	case reflect.Bool:
		return "boolean"
	case reflect.Slice:
		return "array of " + schemaType(t.Elem())
	case reflect.Map:
		return "map of " + schemaType(t.Key()) + " to " + schemaType(t.Elem())
	}
	return "unsupported " + t.String()
}

func (r configRow) defaultText() string {
	if r.def == "" {
		return "—"
	}
	return r.def
}

// markdownTable is the README's table.
func markdownTable(rows []configRow) string {
	var b strings.Builder
	b.WriteString("| field | role | type | default | meaning |\n|---|---|---|---|---|\n")
	for _, r := range rows {
		def := "—"
		if r.def != "" {
			def = "`" + r.def + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", r.name, r.role, r.typ, def, r.doc)
	}
	return b.String()
}

// docTable is the table of the package doc: comment lines, preformatted.
func docTable(rows []configRow) string {
	w := [4]int{len("field"), len("role"), len("type"), len("default")}
	for _, r := range rows {
		for i, s := range []string{r.name, r.role, r.typ, r.defaultText()} {
			w[i] = max(w[i], len([]rune(s)))
		}
	}
	line := func(cols ...string) string {
		var b strings.Builder
		b.WriteString("//\t")
		for i, c := range cols[:4] {
			b.WriteString(c + strings.Repeat(" ", w[i]-len([]rune(c))+2))
		}
		return b.String() + cols[4] + "\n"
	}
	s := line("field", "role", "type", "default", "meaning")
	for _, r := range rows {
		s += line(r.name, r.role, r.typ, r.defaultText(), r.doc)
	}
	return s
}

// replaceBetween returns src with what lies between begin (through the end
// of its line) and end replaced by body.
func replaceBetween(t *testing.T, file string, src []byte, begin, end, body string) []byte {
	t.Helper()
	i := bytes.Index(src, []byte(begin))
	if i < 0 {
		t.Fatalf("%s: no %q marker", file, begin)
	}
	i += bytes.IndexByte(src[i:], '\n') + 1
	j := bytes.Index(src[i:], []byte(end))
	if j < 0 {
		t.Fatalf("%s: no %q marker after %q", file, end, begin)
	}
	return append(append(append([]byte{}, src[:i]...), body...), src[i+j:]...)
}

const (
	docBegin    = "// Generated from Config's tags by `go generate ./plugin`; do not edit:\n"
	docEnd      = "//\n// On a manage route"
	readmeBegin = "<!-- config-table: generated from plugin.Config by `go generate ./plugin`; do not edit -->"
	readmeEnd   = "<!-- /config-table -->"
)

//go:generate go test -run ^TestConfigTables$ -update-config-tables .

// TestConfigTables: the tables of doc.go and README.md are what Config's
// tags generate.
func TestConfigTables(t *testing.T) {
	rows := configRows(t)
	for _, c := range []struct{ file, begin, end, body string }{
		{"doc.go", docBegin, docEnd, "//\n" + docTable(rows)},
		{"../README.md", readmeBegin, readmeEnd, "\n" + markdownTable(rows) + "\n"},
	} {
		src, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		want := replaceBetween(t, c.file, src, c.begin, c.end, c.body)
		if bytes.Equal(src, want) {
			continue
		}
		if *updateTables {
			if err := os.WriteFile(c.file, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("%s: the config table differs from Config's tags; run `go generate ./plugin`", c.file)
	}
}

// TestConfigDefaultTags checks each default tag against what the code
// does: a config that sets the field to its documented default resolves
// exactly like one that leaves it out. And a field doc comment that names
// a default or a role must agree with the tags.
func TestConfigDefaultTags(t *testing.T) {
	resolved := func(js string) string {
		var c Config
		if err := json.Unmarshal([]byte(js), &c); err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		c.getenv = func(string) string { return "config-doc-test-gateway-secret" }
		return fmt.Sprintf("%+v", c.resolve())
	}
	absent := resolved(`{}`)
	comments := fieldComments(t)
	for _, r := range configRows(t) {
		if r.def != "" {
			if got := resolved(`{"` + r.name + `":` + r.def + `}`); got != absent {
				t.Errorf("%s: the default tag says %s, but setting it resolves differently from leaving it out:\n set    %s\n absent %s", r.name, r.def, got, absent)
			}
		}
		doc := strings.Join(strings.Fields(comments[r.goName]), " ")
		if m := regexp.MustCompile(`(?i)\bdefault\b:? ?(.*)`).FindStringSubmatch(doc); m != nil {
			squeeze := strings.NewReplacer(" ", "", `"`, "").Replace
			switch {
			case r.def == "" && !strings.Contains(strings.ToLower(doc), "no default"):
				t.Errorf("Config.%s: its comment names a default, its tag none: %q", r.goName, doc)
			case r.def != "" && !strings.HasPrefix(squeeze(m[1]), squeeze(r.def)):
				t.Errorf("Config.%s: its comment says default %q, its tag %s", r.goName, m[1], r.def)
			}
		}
		for _, role := range []string{RoleManage, RoleEnforce} {
			said := regexp.MustCompile(`(?i)\b` + role + ` only\b|\bfor ` + role + `\b`).MatchString(doc)
			if said && r.role != role {
				t.Errorf("Config.%s: its comment says %s, its role tag %s: %q", r.goName, role, r.role, doc)
			}
		}
	}
}

// fieldComments reads the doc comments of Config's fields from config.go.
func fieldComments(t *testing.T) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "config.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		ts, ok := n.(*ast.TypeSpec)
		if !ok || ts.Name.Name != "Config" {
			return true
		}
		for _, fl := range ts.Type.(*ast.StructType).Fields.List {
			for _, name := range fl.Names {
				out[name.Name] = fl.Doc.Text()
			}
		}
		return false
	})
	if len(out) == 0 {
		t.Fatal("config.go: no Config struct")
	}
	return out
}

// TestSchemaLuaFieldsAndDefaults: schema.lua lists Config's fields in
// Config's order, each with the default of its tag (and none where the tag
// has none).
func TestSchemaLuaFieldsAndDefaults(t *testing.T) {
	src, err := os.ReadFile("../schema.lua")
	if err != nil {
		t.Fatal(err)
	}
	// The config record: one "{ name = { type = ..." entry per field.
	_, rec, _ := strings.Cut(string(src), "{ config = {")
	field := regexp.MustCompile(`\{ ([a-z_]+) = \{ type = "`)
	locs := field.FindAllStringSubmatchIndex(rec, -1)
	var names []string
	defs := map[string]string{}
	for i, l := range locs {
		name := rec[l[2]:l[3]]
		names = append(names, name)
		end := len(rec)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		body := rec[l[1]:end]
		if m := regexp.MustCompile(`default = ("[^"]*"|\{[^}]*\}|[0-9a-z]+)`).FindStringSubmatch(body); m != nil {
			defs[name] = m[1]
		}
	}
	rows := configRows(t)
	var want []string
	for _, r := range rows {
		want = append(want, r.name)
	}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("schema.lua config fields\n got %v\nwant %v (Config's order)", names, want)
	}
	squeeze := strings.NewReplacer(" ", "").Replace
	for _, r := range rows {
		lua := ""
		if r.def != "" {
			lua = r.def
			if strings.HasPrefix(lua, "[") { // a JSON array is a Lua table
				lua = "{" + strings.TrimSuffix(strings.TrimPrefix(lua, "["), "]") + "}"
			}
		}
		if squeeze(defs[r.name]) != squeeze(lua) {
			t.Errorf("schema.lua %s: default %q, Config's tag %q", r.name, defs[r.name], r.def)
		}
	}
}
