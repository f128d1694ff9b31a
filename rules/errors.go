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

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// errs collects problems while walking one source.
type errs struct {
	file string
	list Errors
}

func (c *errs) add(path string, line int, format string, args ...any) {
	c.list = append(c.list, &Error{File: c.file, Path: path, Line: line, Message: fmt.Sprintf(format, args...)})
}

// err returns the collected problems as an error, or nil when there are none.
func (c *errs) err() error {
	if len(c.list) == 0 {
		return nil
	}
	return c.list
}
