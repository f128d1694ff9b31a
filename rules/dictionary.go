package rules

// AppendDictionary appends every flag's variant as an RFC 9651 structured
// field dictionary — "new-checkout=on, dark-mode=off" — the X-Features header
// of DESIGN.md §3. Flag keys are valid sf-keys and variant names valid
// sf-tokens, so nothing needs quoting. It evaluates flags not yet evaluated.
func (e *Evaluation) AppendDictionary(dst []byte) []byte {
	for i := range e.set.flags {
		if i > 0 {
			dst = append(dst, ", "...)
		}
		dst = append(dst, e.set.flags[i].key...)
		dst = append(dst, '=')
		dst = append(dst, e.Variant(i)...)
	}
	return dst
}
