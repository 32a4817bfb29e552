package cli

import (
	"bytes"
	"testing"
)

func TestPrefixWriter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"pgq bench: unknown benchmark\n", "pgq: bench: unknown benchmark\n"},
		{"pgq bench: x", "pgq: bench: x"},
		{"pgq ben", "pgq ben"},
		{"starting server\npgq bench: failed\n", "starting server\npgq: bench: failed\n"},
		{"a\n\npgq bench: b\nc pgq bench: d\n", "a\n\npgq: bench: b\nc pgq bench: d\n"},
		{"pgq\npgq bench: \n", "pgq\npgq: bench: \n"},
		{"", ""},
	} {
		// Whole, then byte by byte, then in chunks of 3.
		for _, size := range []int{len(tc.in) + 1, 1, 3} {
			var out bytes.Buffer
			p := &prefixWriter{w: &out, old: []byte("pgq bench: "), new: []byte("pgq: bench: ")}
			for s := tc.in; len(s) > 0; {
				n := min(size, len(s))
				if k, err := p.Write([]byte(s[:n])); k != n || err != nil {
					t.Fatalf("Write(%q) = %d, %v", s[:n], k, err)
				}
				s = s[n:]
			}
			p.flush()
			if out.String() != tc.want {
				t.Errorf("%q in chunks of %d: got %q, want %q", tc.in, size, out.String(), tc.want)
			}
		}
	}
}
