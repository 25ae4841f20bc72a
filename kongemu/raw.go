package kongemu

import (
	"fmt"
	"math"
	"strings"

	kpp "github.com/Kong/go-pdk/server/kong_plugin_protocol"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Kong encodes PDK replies with lua-protobuf, which puts a Lua string into
// a protobuf `string` field byte for byte: a header value, a query
// argument or a decoded path that is not UTF-8 reaches the plugin as it
// came (kong/runloop/plugin_servers/pb_rpc.lua call_pdk, 3.8.1 and 3.9.1;
// rpc/pb_rpc.lua in 3.9). Go's proto.Marshal refuses such strings, so
// kongemu encodes those replies itself; go-pdk's proto.Unmarshal then
// fails the PDK call in the plugin, exactly as it does behind Kong.

// marshalReply encodes a PDK reply as Kong does: proto.Marshal, and the
// wire encoding without UTF-8 checks for the reply types that carry
// request bytes (String, Struct, ListValue, Value) when it refuses.
func marshalReply(m proto.Message) ([]byte, error) {
	b, err := proto.Marshal(m)
	if err == nil {
		return b, nil
	}
	switch v := m.(type) {
	case *kpp.String:
		b := protowire.AppendTag(nil, 1, protowire.BytesType) // string v = 1
		return protowire.AppendString(b, v.V), nil
	case *structpb.Struct:
		return appendStruct(nil, v), nil
	case *structpb.ListValue:
		return appendList(nil, v), nil
	case *structpb.Value:
		return appendValue(nil, v), nil
	}
	return nil, fmt.Errorf("encode reply: %w", err)
}

func appendBytesField(b []byte, num protowire.Number, msg []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, msg)
}

// google.protobuf.Struct: map<string, Value> fields = 1.
func appendStruct(b []byte, s *structpb.Struct) []byte {
	for k, v := range s.GetFields() {
		var entry []byte
		entry = protowire.AppendTag(entry, 1, protowire.BytesType)
		entry = protowire.AppendString(entry, k)
		entry = appendBytesField(entry, 2, appendValue(nil, v))
		b = appendBytesField(b, 1, entry)
	}
	return b
}

// google.protobuf.ListValue: repeated Value values = 1.
func appendList(b []byte, l *structpb.ListValue) []byte {
	for _, v := range l.GetValues() {
		b = appendBytesField(b, 1, appendValue(nil, v))
	}
	return b
}

// google.protobuf.Value: null 1, number 2, string 3, bool 4, struct 5,
// list 6.
func appendValue(b []byte, v *structpb.Value) []byte {
	switch k := v.GetKind().(type) {
	case *structpb.Value_NullValue:
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, 0)
	case *structpb.Value_NumberValue:
		b = protowire.AppendTag(b, 2, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(k.NumberValue))
	case *structpb.Value_StringValue:
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendString(b, k.StringValue)
	case *structpb.Value_BoolValue:
		b = protowire.AppendTag(b, 4, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeBool(k.BoolValue))
	case *structpb.Value_StructValue:
		b = appendBytesField(b, 5, appendStruct(nil, k.StructValue))
	case *structpb.Value_ListValue:
		b = appendBytesField(b, 6, appendList(nil, k.ListValue))
	}
	return b
}

// kongNormalize is Kong's normalize(uri, merge_slashes) of
// kong/tools/uri.lua (identical in 3.8.1 and 3.9.1), which
// kong.request.get_path applies to the raw path (kong/pdk/request.lua):
// every %XX escape is decoded except those of reserved characters
// (!*'();:@&=+$,/?%#[]), which are kept upper-cased; then dot segments are
// removed and, with mergeSlashes, "//" merged. The result may hold any
// byte, including ones that are not UTF-8.
func kongNormalize(uri string, mergeSlashes bool) string {
	if uri == "" || uri == "/" {
		return uri
	}
	if strings.IndexByte(uri, '%') >= 0 {
		uri = decodeUnreserved(uri)
	}
	if strings.IndexByte(uri, '.') < 0 && (!mergeSlashes || !strings.Contains(uri, "//")) {
		return uri
	}
	var out []string
	pop := func() {
		if len(out) > 0 {
			out = out[:len(out)-1]
		}
	}
	for len(uri) > 0 {
		switch {
		case uri == "/.":
			uri = "/"
		case uri == "/..":
			uri = "/"
			pop()
		case uri == "." || uri == "..":
			uri = ""
		case strings.HasPrefix(uri, "../"):
			uri = uri[3:]
		case strings.HasPrefix(uri, "./"):
			uri = uri[2:]
		case strings.HasPrefix(uri, "/./"):
			uri = uri[2:]
		case strings.HasPrefix(uri, "/../"):
			uri = uri[3:]
			pop()
		case mergeSlashes && strings.HasPrefix(uri, "//"):
			uri = uri[1:]
		default:
			i := strings.IndexByte(uri[1:], '/')
			if i < 0 {
				out = append(out, uri)
				uri = ""
			} else {
				out = append(out, uri[:i+1])
				uri = uri[i+1:]
			}
		}
	}
	return strings.Join(out, "")
}

const reservedChars = "!*'();:@&=+$,/?%#[]"

// decodeUnreserved is normalize's ngx.re.gsub("%([\\dA-F]{2})", ..., "joi").
func decodeUnreserved(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && ishex(s[i+1]) && ishex(s[i+2]) {
			c := unhex(s[i+1])<<4 | unhex(s[i+2])
			if strings.IndexByte(reservedChars, c) >= 0 {
				b.WriteByte('%')
				b.WriteString(strings.ToUpper(s[i+1 : i+3]))
			} else {
				b.WriteByte(c)
			}
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// rawPath is kong.request.get_raw_path: $request_uri up to a "?" found
// from its second byte (kong/pdk/request.lua).
func rawPath(requestURI string) string {
	if len(requestURI) > 1 {
		if i := strings.IndexByte(requestURI[1:], '?'); i >= 0 {
			return requestURI[:i+1]
		}
	}
	return requestURI
}
