package envelope

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestContractTable: the table of codes in docs/CONTRACT.md §3 has one row
// per code of this package, with its status and message (4000's message is
// always the field's own, so the row describes it instead).
func TestContractTable(t *testing.T) {
	raw, err := os.ReadFile("../../docs/CONTRACT.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(raw), "| HTTP | code | message | when |\n|---|---|---|---|\n")
	if !ok {
		t.Fatal("docs/CONTRACT.md: no table of codes")
	}
	table, _, _ = strings.Cut(table, "\n\n")
	type row struct{ status, message string }
	rows := map[Code]row{}
	var order []Code
	for _, line := range strings.Split(table, "\n") {
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 4 {
			t.Fatalf("docs/CONTRACT.md: row %q has %d cells", line, len(cells))
		}
		c := Code(strings.TrimSpace(cells[1]))
		rows[c] = row{strings.TrimSpace(cells[0]), strings.TrimSpace(cells[2])}
		order = append(order, c)
	}
	codes := Codes()
	slices.Sort(codes)
	if !slices.Equal(order, codes) {
		t.Errorf("docs/CONTRACT.md lists codes %v, the table here %v (both in order)", order, codes)
	}
	for _, c := range codes {
		r := rows[c]
		status := strconv.Itoa(c.Status())
		if c == OK {
			status = "200/201"
		}
		if r.status != status {
			t.Errorf("%s: docs/CONTRACT.md says HTTP %s, the code %s", c, r.status, status)
		}
		if c != BadRequest && r.message != c.Message() {
			t.Errorf("%s: docs/CONTRACT.md says %q, the code %q", c, r.message, c.Message())
		}
	}
}
