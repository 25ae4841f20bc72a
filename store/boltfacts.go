package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/keygate/keygate/internal/apikey"
	bolt "go.etcd.io/bbolt"
)

// A hashes value starts with the id of its key and the end of the secret's
// window (hashHead bytes); format v2 follows them with the tag factsV2 and
// the facts of the key, so that a verification reads the one value:
//
//	apiKeyId     IDLen bytes
//	validUntil   8 bytes, big-endian (0 = current secret)
//	tag          1 byte, factsV2
//	mode         1 byte
//	expiresAt    varint (Key.ExpiresAt; 0 = never)
//	revokedAt    varint (Key.RevokedAt; 0 = not revoked)
//	workspaceId  uvarint length, bytes
//	scopes       uvarint count+1 (0: null), then each: uvarint length, bytes
//	ipWhitelist  uvarint count, then each prefix: uvarint bits<<1 | 1 if
//	             IPv6, then the first ⌈bits/8⌉ bytes of the address (the
//	             rest are zero: stored prefixes are masked)
//
// The value ends there. The old form, written before v2, is the head alone
// (Lookup then decodes the key record, and OpenBolt rewrites it to v2).
const (
	hashHead = apikey.IDLen + 8
	factsV2  = 2
)

// errHashValue: a v2 value that does not decode (truncated or corrupt).
var errHashValue = errors.New("corrupt v2 hash value")

// appendFactsValue appends the hashes value of a secret of k valid until
// validUntil (0: as long as the key). A key whose facts the v2 decoder
// would refuse (an id not of IDLen bytes, a field over the limits of
// apikey, a whitelist entry not canonical: none of which the sidecar
// stores) gets the old form, so that Lookup answers for it from the key
// record as it always has.
func appendFactsValue(dst []byte, k *Key, validUntil int64) []byte {
	dst = append(dst, k.ID...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(validUntil))
	if len(k.ID) != apikey.IDLen || len(k.WorkspaceID) > apikey.MaxWorkspaceIDLen ||
		len(k.Scopes) > apikey.MaxScopes || len(k.IPWhitelist) > apikey.MaxIPWhitelist {
		return dst
	}
	for _, s := range k.Scopes {
		if len(s) > apikey.MaxScopeLen {
			return dst
		}
	}
	ips, err := apikey.ParseCanonical(k.IPWhitelist)
	if err != nil {
		return dst
	}
	dst = append(dst, factsV2, byte(k.Mode))
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
	return dst
}

// factsReader reads a v2 value; the first error sticks.
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

// decodeFactsValue returns the facts of a v2 hashes value: exactly what
// Key.Facts(validUntil) returns for the key it was written from. The
// strings of the facts share one copy of the value.
func decodeFactsValue(v []byte) (*apikey.Facts, error) {
	if len(v) < hashHead+2 || v[hashHead] != factsV2 {
		return nil, errHashValue
	}
	s := string(v) // the one copy the strings below slice
	validUntil := int64(binary.BigEndian.Uint64(v[apikey.IDLen:]))
	r := factsReader{v: v, i: hashHead + 2}
	f := &apikey.Facts{APIKeyID: s[:apikey.IDLen], Mode: apikey.Mode(v[hashHead+1])}
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

// factsInStep reports whether the last write transaction of the file
// (tx's view) was stamped by stampFacts.
func factsInStep(tx *bolt.Tx) bool {
	m := tx.Bucket(bMeta)
	if m == nil {
		return false
	}
	v := m.Get(metaFacts)
	return len(v) == 8 && binary.BigEndian.Uint64(v) == uint64(tx.ID())
}

// stampFacts records, in a write transaction, that it keeps the facts in
// step.
func stampFacts(tx *bolt.Tx) error {
	return tx.Bucket(bMeta).Put(metaFacts, binary.BigEndian.AppendUint64(nil, uint64(tx.ID())))
}

// syncChunk is how many hashes values syncFacts reads per transaction (a
// variable for the tests).
var syncChunk = 10_000

// syncFacts derives every hashes value again from its key record and
// rewrites those that differ, reading syncChunk values per transaction,
// then stamps the file. A value whose key record is missing or does not
// decode keeps the head alone (apiKeyId + validUntil), so Lookup answers
// for it from the key record, as before v2; so does a key whose facts
// appendFactsValue keeps in the old form. Only chunks with values to
// rewrite take a write transaction. Nothing else writes while the file is
// being opened.
func syncFacts(db *bolt.DB) error {
	var after []byte // the last hash read
	for done := false; !done; {
		var hs, vs [][]byte // the values to write, with their hashes
		err := db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bHashes).Cursor()
			h, v := c.First()
			if after != nil {
				if h, v = c.Seek(after); bytes.Equal(h, after) {
					h, v = c.Next()
				}
			}
			for n := 0; h != nil && n < syncChunk; h, v = c.Next() {
				after = append(after[:0], h...)
				n++
				if len(v) < hashHead {
					continue // not a value of ours: Lookup answers not found
				}
				want := v[:hashHead:hashHead]
				if k, err := lookupKey(tx, v[:apikey.IDLen]); err == nil {
					want = appendFactsValue(nil, k, int64(binary.BigEndian.Uint64(v[apikey.IDLen:])))
				}
				if !bytes.Equal(v, want) {
					hs, vs = append(hs, bytes.Clone(h)), append(vs, bytes.Clone(want))
				}
			}
			done = h == nil
			return nil
		})
		if err == nil && len(hs) > 0 {
			err = db.Update(func(tx *bolt.Tx) error {
				hashes := tx.Bucket(bHashes)
				// Runs of values grow in key order: fill the split pages
				// as a bulk load does.
				hashes.FillPercent = bulkFill
				for i, h := range hs {
					if err := hashes.Put(h, vs[i]); err != nil {
						return err
					}
				}
				return nil
			})
		}
		if err != nil {
			return fmt.Errorf("bring key facts in step: %w", err)
		}
	}
	if err := db.Update(stampFacts); err != nil {
		return fmt.Errorf("bring key facts in step: %w", err)
	}
	return nil
}
