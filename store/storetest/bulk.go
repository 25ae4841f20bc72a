package storetest

import (
	"context"

	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/internal/bulkhook"
)

// BulkKey is one key for BulkCreate: what Store.Create takes as arguments.
type BulkKey struct {
	Key        *store.Key
	SecretHash [32]byte
	Event      store.Event
}

// BulkCreate stores keys in b as b.Create would, one after the other in
// slice order — the same key record, hash entry, workspace index entry and
// CREATED event, with the same sequence numbers — but commits 20,000 keys
// per transaction (one fsync each) instead of one batch per key. It is for
// tools and benchmarks that load many keys at once (bench/keygen), never
// for serving.
//
// Each chunk is all or nothing, and a conflict (an id or hash already
// stored, or repeated in keys) fails its chunk with store.ErrConflict;
// chunks committed before a failure stay stored, and the error says how
// many keys that is. Like Create, it sets every Key's Secrets and every
// Event's APIKeyID and WorkspaceID.
//
// Loading is fastest, and the file smallest, when keys come in the order of
// their secret hashes and ids (bench/keygen sorts them so).
func BulkCreate(ctx context.Context, b *store.Bolt, keys []BulkKey) error {
	ks, hs, evs := make([]*store.Key, len(keys)), make([][32]byte, len(keys)), make([]store.Event, len(keys))
	for i, k := range keys {
		ks[i], hs[i], evs[i] = k.Key, k.SecretHash, k.Event
	}
	create := bulkhook.Create.(func(context.Context, *store.Bolt, []*store.Key, [][32]byte, []store.Event) error)
	err := create(ctx, b, ks, hs, evs)
	for i := range keys {
		keys[i].Event = evs[i]
	}
	return err
}
