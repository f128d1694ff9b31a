package rules

import (
	"fmt"
	"strings"
)

// Error is one problem in a flag definition: where it is and what to change.
type Error struct {
	// File is the source name, e.g. "flags.yaml".
	File string
	// Path is the field path inside the file, e.g. "flags.new-checkout.rules[1].split".
	Path string
	// Line is the 1-based line in the file, or 0 when unknown.
	Line int
	// Message says what is wrong and, where it can, what to write instead.
	Message string

	more int // on the last line of a capped list: how many it stands for
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	if e.Line > 0 {
		fmt.Fprintf(&b, " (line %d)", e.Line)
	}
	return b.String()
}

// Errors is every problem found in one load, in the order found. A load that
// returns Errors has been refused whole.
type Errors []*Error

// Count returns how many problems es stands for, those summarized in a
// capped list's last line included.
func (es Errors) Count() int {
	n := len(es)
	if n > 0 && es[n-1].more > 0 {
		n += es[n-1].more - 1
	}
	return n
}

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// MaxErrors bounds the problems one load reports: past it, a file is
// broken throughout (or generated wrong), and listing every problem would
// cost more memory than the file itself.
const MaxErrors = 100

// errs collects problems while walking one source.
type errs struct {
	file  string
	list  Errors
	count int // problems found, listed or not
}

func (c *errs) add(path string, line int, format string, args ...any) {
	c.count++
	if len(c.list) < MaxErrors {
		c.list = append(c.list, &Error{File: c.file, Path: path, Line: line, Message: fmt.Sprintf(format, args...)})
	}
}

// err returns the collected problems as an error, or nil when there are none.
func (c *errs) err() error {
	if c.count == 0 {
		return nil
	}
	return capErrors(c.list, c.count)
}

// capErrors keeps the first MaxErrors of count problems, and says how many
// more there are.
func capErrors(list Errors, count int) Errors {
	if len(list) > MaxErrors {
		list = list[:MaxErrors]
	}
	if count > len(list) {
		more := count - len(list)
		list = append(list[:len(list):len(list)], &Error{Message: fmt.Sprintf("… and %d more errors: fix these first", more), more: more})
	}
	return list
}
