package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/keygate/keygate/internal/apikey"
)

// A hashes value holds the id of its key, the end of the secret's window
// and the facts of the key, so that a verification reads the one value:
//
//	apiKeyId     IDLen bytes
//	validUntil   8 bytes, big-endian (0 = current secret)
//	mode         1 byte
//	expiresAt    varint (Key.ExpiresAt; 0 = never)
//	revokedAt    varint (Key.RevokedAt; 0 = not revoked)
//	workspaceId  uvarint length, bytes
//	scopes       uvarint count+1 (0: null), then each: uvarint length, bytes
//	ipWhitelist  uvarint count, then each prefix: uvarint bits<<1 | 1 if
//	             IPv6, then the first ⌈bits/8⌉ bytes of the address (the
//	             rest are zero: stored prefixes are masked)
//
// The value ends there.
const hashHead = apikey.IDLen + 8

// errHashValue: a value that does not decode (truncated or corrupt).
var errHashValue = errors.New("corrupt hash value")

// appendFactsValue appends the hashes value of a secret of k valid until
// validUntil (0: as long as the key). A key whose facts the decoder would
// refuse (an id not of IDLen bytes, a field over the limits of apikey, a
// whitelist entry not canonical: none of which the sidecar lets through)
// is an error, and is not stored.
func appendFactsValue(dst []byte, k *Key, validUntil int64) ([]byte, error) {
	if len(k.ID) != apikey.IDLen || len(k.WorkspaceID) > apikey.MaxWorkspaceIDLen ||
		len(k.Scopes) > apikey.MaxScopes || len(k.IPWhitelist) > apikey.MaxIPWhitelist {
		return nil, fmt.Errorf("store: key %q is outside the limits of a stored key", k.ID)
	}
	for _, s := range k.Scopes {
		if len(s) > apikey.MaxScopeLen {
			return nil, fmt.Errorf("store: key %s: a scope is longer than %d bytes", k.ID, apikey.MaxScopeLen)
		}
	}
	ips, err := apikey.ParseCanonical(k.IPWhitelist)
	if err != nil {
		return nil, fmt.Errorf("store: key %s: %w", k.ID, err)
	}
	dst = append(dst, k.ID...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(validUntil))
	dst = append(dst, byte(k.Mode))
	dst = binary.AppendVarint(dst, k.ExpiresAt)
	dst = binary.AppendVarint(dst, k.RevokedAt)
	dst = binary.AppendUvarint(dst, uint64(len(k.WorkspaceID)))
	dst = append(dst, k.WorkspaceID...)
	if k.Scopes == nil {
		dst = append(dst, 0)
	} else {
		dst = binary.AppendUvarint(dst, uint64(len(k.Scopes))+1)
	}
	for _, s := range k.Scopes {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(ips)))
	for _, p := range ips {
		bits, v6 := uint64(p.Bits()), uint64(0)
		var a []byte
		if p.Addr().Is4() {
			a4 := p.Addr().As4()
			a = a4[:]
		} else {
			a16 := p.Addr().As16()
			a, v6 = a16[:], 1
		}
		dst = binary.AppendUvarint(dst, bits<<1|v6)
		dst = append(dst, a[:(bits+7)/8]...)
	}
	return dst, nil
}

// factsReader reads a hashes value; the first error sticks.
type factsReader struct {
	v   []byte
	i   int
	err error
}

func (r *factsReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	x, n := binary.Uvarint(r.v[r.i:])
	if n <= 0 {
		r.err = errHashValue
		return 0
	}
	r.i += n
	return x
}

func (r *factsReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	x, n := binary.Varint(r.v[r.i:])
	if n <= 0 {
		r.err = errHashValue
		return 0
	}
	r.i += n
	return x
}

// span returns the offsets of the next n bytes, n read as a uvarint of at
// most limit.
func (r *factsReader) span(limit uint64) (int, int) {
	n := r.uvarint()
	if r.err == nil && (n > limit || n > uint64(len(r.v)-r.i)) {
		r.err = errHashValue
	}
	if r.err != nil {
		return 0, 0
	}
	start := r.i
	r.i += int(n)
	return start, r.i
}

// decodeFactsValue returns the facts of a hashes value: exactly what
// Key.Facts(validUntil) returns for the key it was written from. The
// strings of the facts share one copy of the value.
func decodeFactsValue(v []byte) (*apikey.Facts, error) {
	if len(v) < hashHead+1 {
		return nil, errHashValue
	}
	s := string(v) // the one copy the strings below slice
	validUntil := int64(binary.BigEndian.Uint64(v[apikey.IDLen:]))
	r := factsReader{v: v, i: hashHead + 1}
	f := &apikey.Facts{APIKeyID: s[:apikey.IDLen], Mode: apikey.Mode(v[hashHead])}
	exp := r.varint()
	if validUntil != 0 && (exp == 0 || validUntil < exp) {
		exp = validUntil
	}
	f.ExpiresAt = exp
	f.Revoked = r.varint() != 0
	a, b := r.span(apikey.MaxWorkspaceIDLen)
	f.WorkspaceID = s[a:b]
	if n := r.uvarint(); n > apikey.MaxScopes+1 {
		r.err = errHashValue
	} else if n > 0 && r.err == nil {
		f.Scopes = make([]string, n-1)
		for i := range f.Scopes {
			a, b := r.span(apikey.MaxScopeLen)
			f.Scopes[i] = s[a:b]
		}
	}
	if n := r.uvarint(); n > apikey.MaxIPWhitelist {
		r.err = errHashValue
	} else if n > 0 && r.err == nil {
		f.IPWhitelist = make([]netip.Prefix, n)
		for i := range f.IPWhitelist {
			f.IPWhitelist[i] = r.prefix()
		}
	}
	if r.err == nil && r.i != len(v) {
		r.err = errHashValue
	}
	if r.err != nil {
		return nil, r.err
	}
	return f, nil
}

func (r *factsReader) prefix() netip.Prefix {
	tag := r.uvarint()
	bits, v6 := tag>>1, tag&1 == 1
	if r.err != nil || bits > 128 || (!v6 && bits > 32) {
		r.err = errHashValue
		return netip.Prefix{}
	}
	n := int(bits+7) / 8
	if n > len(r.v)-r.i {
		r.err = errHashValue
		return netip.Prefix{}
	}
	var a [16]byte
	r.i += copy(a[:], r.v[r.i:r.i+n])
	addr := netip.AddrFrom16(a)
	if !v6 {
		addr = netip.AddrFrom4([4]byte(a[:4]))
	}
	p := netip.PrefixFrom(addr, int(bits))
	if p.Masked() != p {
		r.err = errHashValue
	}
	return p
}
