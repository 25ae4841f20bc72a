// Package apikey is the shared core of keygate: the key format, the pure
// access decision, and the validation of a key's name, scopes and IP
// whitelist. The plugin and the sidecar both use it, so a key is judged by
// the same code wherever it is judged.
//
// Key format (docs/CONTRACT.md §4):
//
//	apiKeyId  sk_live_|sk_test_ + 14 base62                 (public)
//	secret    sk_live_|sk_test_ + 32 base62 + 6 base62 CRC-32 of what precedes it
//
// Invariants: ParseSecret never allocates and rejects a bad checksum before
// anyone looks the key up; only Hash(secret) is ever stored; a Secret value
// prints redacted in logs.
package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"hash/crc32"
	"log/slog"
)

// Mode is a key's mode: 1 = LIVE, 2 = TEST.
type Mode uint8

const (
	Live Mode = 1
	Test Mode = 2
)

// String is the API name of the mode.
func (m Mode) String() string {
	switch m {
	case Live:
		return "LIVE"
	case Test:
		return "TEST"
	}
	return "UNKNOWN"
}

// Prefix is the key prefix of the mode.
func (m Mode) Prefix() string {
	if m == Test {
		return prefixTest
	}
	return prefixLive
}

// ParseMode turns "LIVE"/"TEST" into a Mode.
func ParseMode(s string) (Mode, bool) {
	switch s {
	case "LIVE":
		return Live, true
	case "TEST":
		return Test, true
	}
	return 0, false
}

const (
	prefixLive = "sk_live_"
	prefixTest = "sk_test_"
	prefixLen  = 8
	idBodyLen  = 14
	randLen    = 32
	sumLen     = 6

	// IDLen and SecretLen are the full lengths.
	IDLen     = prefixLen + idBodyLen
	SecretLen = prefixLen + randLen + sumLen
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// randomBase62 fills b with uniformly random base62 characters from crypto/rand.
func randomBase62(b []byte) {
	var buf [64]byte
	for i := 0; i < len(b); {
		rand.Read(buf[:]) // never returns an error (Go 1.24+)
		for _, c := range buf {
			if c >= 248 { // 248 = 4*62: reject to keep the distribution uniform
				continue
			}
			b[i] = base62[c%62]
			i++
			if i == len(b) {
				break
			}
		}
	}
}

// NewID returns a fresh apiKeyId of mode m.
func NewID(m Mode) string {
	b := make([]byte, IDLen)
	copy(b, m.Prefix())
	randomBase62(b[prefixLen:])
	return string(b)
}

// Secret is a plaintext key secret. It prints redacted in logs; use Reveal
// only to write the one response that carries it.
type Secret string

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(Hint(string(s))) }

// String implements fmt.Stringer with the redacted form.
func (s Secret) String() string { return Hint(string(s)) }

// Reveal returns the plaintext.
func (s Secret) Reveal() string { return string(s) }

// NewSecret returns a fresh secret of mode m: 32 random base62 characters and
// the checksum.
func NewSecret(m Mode) Secret {
	b := make([]byte, SecretLen)
	copy(b, m.Prefix())
	randomBase62(b[prefixLen : prefixLen+randLen])
	putChecksum(b[SecretLen-sumLen:], crc32.ChecksumIEEE(b[:SecretLen-sumLen]))
	return Secret(b)
}

// putChecksum writes v in base62, most significant digit first, zero padded.
func putChecksum(dst []byte, v uint32) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = base62[v%62]
		v /= 62
	}
}

// base62Values maps a byte to its base62 value, or -1.
var base62Values = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(base62); i++ {
		t[base62[i]] = int8(i)
	}
	return t
}()

func base62Value(c byte) int { return int(base62Values[c]) }

// ParseSecret checks that s has the secret format and a valid checksum, and
// returns its mode. It does not allocate.
func ParseSecret[T string | []byte](s T) (Mode, bool) {
	if len(s) != SecretLen {
		return 0, false
	}
	m, ok := prefixMode(s)
	if !ok {
		return 0, false
	}
	var sum uint64
	for i := prefixLen; i < SecretLen; i++ {
		v := base62Value(s[i])
		if v < 0 {
			return 0, false
		}
		if i >= SecretLen-sumLen {
			sum = sum*62 + uint64(v)
		}
	}
	if sum != uint64(crc32IEEEString(s[:SecretLen-sumLen])) {
		return 0, false
	}
	return m, true
}

// crcTables are the slicing-by-8 tables of CRC-32 (IEEE); crcTables[0] is
// the standard table.
var crcTables = func() (t [8][256]uint32) {
	t[0] = *crc32.MakeTable(crc32.IEEE)
	for i := range 256 {
		c := t[0][i]
		for k := 1; k < 8; k++ {
			c = t[0][c&0xff] ^ c>>8
			t[k][i] = c
		}
	}
	return t
}()

// crc32IEEEString is CRC-32 (IEEE) of s, sliced by 8 over our own tables:
// as fast as the library's for the 40 bytes of a key and, unlike a call
// through it, it never makes s escape (so checking a key never allocates).
func crc32IEEEString[T string | []byte](s T) uint32 {
	crc := ^uint32(0)
	t := &crcTables
	for len(s) >= 8 {
		crc ^= uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
		crc = t[7][crc&0xff] ^ t[6][crc>>8&0xff] ^ t[5][crc>>16&0xff] ^ t[4][crc>>24] ^
			t[3][s[4]] ^ t[2][s[5]] ^ t[1][s[6]] ^ t[0][s[7]]
		s = s[8:]
	}
	for i := 0; i < len(s); i++ {
		crc = t[0][byte(crc)^s[i]] ^ crc>>8
	}
	return ^crc
}

// ValidID reports whether s has the apiKeyId format.
func ValidID(s string) bool {
	if len(s) != IDLen {
		return false
	}
	if _, ok := prefixMode(s); !ok {
		return false
	}
	for i := prefixLen; i < IDLen; i++ {
		if base62Value(s[i]) < 0 {
			return false
		}
	}
	return true
}

func prefixMode[T string | []byte](s T) (Mode, bool) {
	switch string(s[:prefixLen]) {
	case prefixLive:
		return Live, true
	case prefixTest:
		return Test, true
	}
	return 0, false
}

// Hash is what is stored of a secret: SHA-256 of its bytes. It does not
// allocate for secrets of the key format's length.
func Hash[T string | []byte](secret T) [32]byte {
	var buf [SecretLen]byte
	if len(secret) <= len(buf) {
		n := copy(buf[:], secret)
		return sha256.Sum256(buf[:n])
	}
	return sha256.Sum256([]byte(secret))
}

// Hint is the displayable form of a secret: prefix + "…" + last 4.
func Hint(secret string) string {
	if len(secret) < prefixLen+4 {
		return "…"
	}
	return secret[:prefixLen] + "…" + secret[len(secret)-4:]
}
