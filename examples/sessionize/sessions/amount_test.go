package sessions

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseAmount(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Amount
		err  error
	}{
		{"12", 12 * amountScale, nil},
		{"12.5", 12_500_000, nil},
		{"12.50", 12_500_000, nil},
		{"1.25e1", 12_500_000, nil},
		{"1250E-2", 12_500_000, nil},
		{"0.0", 0, nil},
		{"-0", 0, nil},
		{"0", 0, nil},
		{"151.57", 151_570_000, nil},
		{"-3.000001", -3_000_001, nil},
		{"0.0000005", 0, nil},  // half: to even
		{"0.0000015", 2, nil},  // half: to even
		{"0.00000051", 1, nil}, // more than half
		{"1e-400", 0, nil},
		{"9223372036854.775807", 9223372036854775807, nil},
		{"9223372036854.775808", 0, errRange},
		{"1e300", 0, errRange},
		{"12.", 0, errNotNumber},
		{".5", 0, errNotNumber},
		{"01", 0, errNotNumber},
		{"1e", 0, errNotNumber},
		{"+1", 0, errNotNumber},
		{`"12"`, 0, errNotNumber},
		{"", 0, errNotNumber},
	} {
		got, err := parseAmount([]byte(c.in))
		require.ErrorIs(t, err, c.err, c.in)
		if c.err == nil {
			require.Equal(t, c.want, got, c.in)
		}
	}
}

// Random numbers in every spelling parse to what math/big makes of them,
// rounded to millionths half to even, and AppendJSON writes back a number
// math/big reads as exactly the amount.
func TestAmountMatchesBigRat(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	scale := new(big.Rat).SetInt64(amountScale)
	for range 20000 {
		mant := rng.Int64N(1e12) - 5e11
		exp := rng.IntN(20) - 12
		var s string
		switch rng.IntN(3) {
		case 0:
			s = fmt.Sprintf("%de%d", mant, exp)
		case 1:
			s = new(big.Rat).Mul(new(big.Rat).SetInt64(mant), pow10(exp)).FloatString(max(0, -exp) + rng.IntN(3))
		default:
			s = fmt.Sprintf("%dE+%d", mant, max(exp, 0))
		}
		want, ok := new(big.Rat).SetString(s)
		require.True(t, ok, s)
		want.Mul(want, scale)
		wantInt := roundHalfEven(want)
		got, err := parseAmount([]byte(s))
		if !wantInt.IsInt64() {
			require.ErrorIs(t, err, errRange, s)
			continue
		}
		require.NoError(t, err, s)
		require.Equal(t, wantInt.Int64(), int64(got), s)
		back, ok := new(big.Rat).SetString(got.String())
		require.True(t, ok, got.String())
		require.Zero(t, back.Cmp(new(big.Rat).Quo(new(big.Rat).SetInt(wantInt), scale)), "%s written as %s", s, got)
	}
}

func pow10(e int) *big.Rat {
	p := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(max(e, -e))), nil)
	if e < 0 {
		return new(big.Rat).SetFrac(big.NewInt(1), p)
	}
	return new(big.Rat).SetInt(p)
}

func roundHalfEven(r *big.Rat) *big.Int {
	q, m := new(big.Int).QuoRem(r.Num(), r.Denom(), new(big.Int))
	twice := new(big.Int).Abs(new(big.Int).Mul(m, big.NewInt(2)))
	switch c := twice.Cmp(r.Denom()); {
	case c > 0, c == 0 && q.Bit(0) == 1:
		if r.Sign() < 0 {
			q.Sub(q, big.NewInt(1))
		} else {
			q.Add(q, big.NewInt(1))
		}
	}
	return q
}

func TestAppendAmount(t *testing.T) {
	for a, want := range map[Amount]string{0: "0", 12_500_000: "12.5", -3_000_001: "-3.000001", 1: "0.000001", 151_570_000: "151.57", -amountScale: "-1"} {
		require.Equal(t, want, a.String())
	}
}

func TestParseMillis(t *testing.T) {
	for in, want := range map[string]int64{"1700000000000": 1700000000000, "1.7e12": 1700000000000, "1700000000000.0": 1700000000000, "0": 0} {
		got, err := parseMillis([]byte(in))
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	_, err := parseMillis([]byte("1700000000000.5"))
	require.ErrorIs(t, err, errFraction)
	_, err = parseMillis([]byte("1e30"))
	require.ErrorIs(t, err, errRange)
}
