package sessions

import (
	"errors"
	"math"
	"strconv"
)

// Amount is a decimal amount of money in millionths of a unit: revenue is
// summed in it, exactly, whatever the JSON number's spelling (12, 12.5,
// 12.50, 0.0, 1.25e1 and 1250e-2 are all 12.5). A number with more than six
// decimals is rounded to six, half to even. JSON has a single number type,
// and binary floating point cannot add 0.1 and 0.2 exactly: neither
// float64 nor an integer number of cents would do.
type Amount int64

// amountScale is 10^amountDecimals: an Amount of amountScale is one unit.
const (
	amountDecimals = 6
	amountScale    = 1_000_000
)

// Errors of parseAmount and parseMillis.
var (
	errNotNumber = errors.New("not a JSON number")
	errRange     = errors.New("out of range")
	errFraction  = errors.New("not a whole number")
)

// number is a JSON number's value as digits × 10^exp, with its sign.
type number struct {
	neg    bool
	digits []byte // without leading zeros; empty for zero
	exp    int
}

// parseNumber parses b, which must be exactly one JSON number.
func parseNumber(b []byte) (number, error) {
	var n number
	i := 0
	if i < len(b) && b[i] == '-' {
		n.neg = true
		i++
	}
	start := i
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i == start || b[start] == '0' && i-start > 1 {
		return n, errNotNumber
	}
	n.digits = append(n.digits, b[start:i]...)
	if i < len(b) && b[i] == '.' {
		i++
		fstart := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == fstart {
			return n, errNotNumber
		}
		n.digits = append(n.digits, b[fstart:i]...)
		n.exp = -(i - fstart)
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		eneg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			eneg = b[i] == '-'
			i++
		}
		estart := i
		e := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			if e < 1_000_000 { // beyond this every value is zero or out of range
				e = e*10 + int(b[i]-'0')
			}
			i++
		}
		if i == estart {
			return n, errNotNumber
		}
		if eneg {
			e = -e
		}
		n.exp += e
	}
	if i != len(b) {
		return n, errNotNumber
	}
	// Leading zeros carry nothing; trailing zeros move into the exponent.
	k := 0
	for k < len(n.digits) && n.digits[k] == '0' {
		k++
	}
	n.digits = n.digits[k:]
	for len(n.digits) > 0 && n.digits[len(n.digits)-1] == '0' {
		n.digits = n.digits[:len(n.digits)-1]
		n.exp++
	}
	if len(n.digits) == 0 {
		n.neg, n.exp = false, 0
	}
	return n, nil
}

// scaled returns the number times 10^shift as an int64, rounded half to
// even, or errRange.
func (n number) scaled(shift int) (int64, error) {
	l, e := len(n.digits), n.exp+shift
	if l == 0 || l+e <= 0 && !(l+e == 0 && n.digits[0] >= '5') {
		return 0, nil // zero, or less than half of one
	}
	if l+e > 19 {
		return 0, errRange // at least 10^19
	}
	keep := min(l, l+e) // digits left of the point
	var v uint64
	for _, d := range n.digits[:keep] {
		v = v*10 + uint64(d-'0')
	}
	for range max(e, 0) {
		v *= 10
	}
	if keep < l {
		// Half to even: n.digits has no trailing zeros, so anything after
		// the first dropped digit is more than nothing.
		first := n.digits[keep]
		if first > '5' || first == '5' && (l > keep+1 || v%2 == 1) {
			v++
		}
	}
	if v > math.MaxInt64 {
		return 0, errRange
	}
	if n.neg {
		return -int64(v), nil
	}
	return int64(v), nil
}

// parseAmount parses a JSON number into an Amount.
func parseAmount(b []byte) (Amount, error) {
	n, err := parseNumber(b)
	if err != nil {
		return 0, err
	}
	v, err := n.scaled(amountDecimals)
	return Amount(v), err
}

// parseMillis parses a JSON number that must be a whole number (any
// spelling: 1700000000000, 1.7e12, 1700000000000.0) within int64.
func parseMillis(b []byte) (int64, error) {
	n, err := parseNumber(b)
	if err != nil {
		return 0, err
	}
	if n.exp < 0 {
		return 0, errFraction
	}
	return n.scaled(0)
}

// AppendJSON appends the amount as the shortest JSON number that is
// exactly it: 12.5, 0, -3.000001.
func (a Amount) AppendJSON(b []byte) []byte {
	u := uint64(a)
	if a < 0 {
		b = append(b, '-')
		u = -u
	}
	b = strconv.AppendUint(b, u/amountScale, 10)
	frac := u % amountScale
	if frac == 0 {
		return b
	}
	var digits [amountDecimals]byte
	for i := amountDecimals - 1; i >= 0; i-- {
		digits[i] = byte('0' + frac%10)
		frac /= 10
	}
	end := amountDecimals
	for digits[end-1] == '0' {
		end--
	}
	b = append(b, '.')
	return append(b, digits[:end]...)
}

// String is the amount as AppendJSON writes it.
func (a Amount) String() string { return string(a.AppendJSON(nil)) }

// MarshalJSON implements json.Marshaler.
func (a Amount) MarshalJSON() ([]byte, error) { return a.AppendJSON(nil), nil }
