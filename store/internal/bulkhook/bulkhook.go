// Package bulkhook carries the bbolt backend's bulk loader from package
// store to package storetest, which offers it to tools and benchmarks
// (storetest.BulkCreate), without making it part of store's API: the
// sidecar writes keys one at a time through Store.Create.
//
// This package cannot name store's types (store imports it), so the loader
// is held as any; storetest asserts its type, and its tests call it.
package bulkhook

// Create is set by package store (its init) to a
//
//	func(ctx context.Context, b *store.Bolt, keys []*store.Key, hashes [][32]byte, events []store.Event) error
var Create any
