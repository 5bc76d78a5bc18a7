package eventjson

// Object reports whether b is one valid JSON object, as json.Valid judges
// it, and calls fn, when not nil, with the key and raw value of each of
// its top-level members while it checks them: one pass over b instead of
// json.Valid's and EachMember's. The calls made before b turns out to be
// invalid have been made: act on them only once Object returns true. key
// is the key's raw bytes without quotes (escapes not decoded; see KeyIs).
func Object(b []byte, fn func(key, raw []byte)) bool {
	v := validator{b: b}
	i := v.space(0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = v.object(i, fn)
	return i >= 0 && v.space(i) == len(b)
}

// maxDepth bounds nesting, as encoding/json does: a deeply nested value
// must not exhaust the stack.
const maxDepth = 10000

// validator checks JSON text; each method takes the index of the value's
// first byte and returns the index just past it, or -1 when it is invalid.
type validator struct {
	b     []byte
	depth int
}

func (v *validator) space(i int) int {
	for i < len(v.b) {
		switch v.b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

func (v *validator) value(i int) int {
	if i >= len(v.b) {
		return -1
	}
	switch c := v.b[i]; {
	case c == '"':
		return v.str(i)
	case c == '{':
		return v.object(i, nil)
	case c == '[':
		return v.array(i)
	case c == '-' || c >= '0' && c <= '9':
		return v.number(i)
	case c == 't':
		return v.literal(i, "true")
	case c == 'f':
		return v.literal(i, "false")
	case c == 'n':
		return v.literal(i, "null")
	}
	return -1
}

func (v *validator) literal(i int, lit string) int {
	if len(v.b)-i < len(lit) || string(v.b[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// object checks the object at b[i] == '{', calling fn for each member.
func (v *validator) object(i int, fn func(key, raw []byte)) int {
	if v.depth++; v.depth > maxDepth {
		return -1
	}
	defer func() { v.depth-- }()
	i = v.space(i + 1)
	if i < len(v.b) && v.b[i] == '}' {
		return i + 1
	}
	for {
		if i >= len(v.b) || v.b[i] != '"' {
			return -1
		}
		end := v.str(i)
		if end < 0 {
			return -1
		}
		key := v.b[i+1 : end-1]
		i = v.space(end)
		if i >= len(v.b) || v.b[i] != ':' {
			return -1
		}
		start := v.space(i + 1)
		if i = v.value(start); i < 0 {
			return -1
		}
		if fn != nil {
			fn(key, v.b[start:i])
		}
		i = v.space(i)
		if i >= len(v.b) {
			return -1
		}
		switch v.b[i] {
		case '}':
			return i + 1
		case ',':
			i = v.space(i + 1)
		default:
			return -1
		}
	}
}

func (v *validator) array(i int) int {
	if v.depth++; v.depth > maxDepth {
		return -1
	}
	defer func() { v.depth-- }()
	i = v.space(i + 1)
	if i < len(v.b) && v.b[i] == ']' {
		return i + 1
	}
	for {
		if i = v.value(i); i < 0 {
			return -1
		}
		i = v.space(i)
		if i >= len(v.b) {
			return -1
		}
		switch v.b[i] {
		case ']':
			return i + 1
		case ',':
			i = v.space(i + 1)
		default:
			return -1
		}
	}
}

// str checks the string at b[i] == '"': no control characters, and only
// JSON's escapes. Like json.Valid it does not check UTF-8.
func (v *validator) str(i int) int {
	b := v.b
	for i++; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1
		case c < 0x20:
			return -1
		case c == '\\':
			i++
			if i >= len(b) {
				return -1
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(b)-i < 5 || !hex(b[i+1]) || !hex(b[i+2]) || !hex(b[i+3]) || !hex(b[i+4]) {
					return -1
				}
				i += 4
			default:
				return -1
			}
		}
	}
	return -1
}

func hex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// number checks -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at b[i].
func (v *validator) number(i int) int {
	b := v.b
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(b, i)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		if j := digits(b, i+1); j > i+1 {
			i = j
		} else {
			return -1
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}

func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}
