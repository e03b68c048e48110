package distlock

import "encoding/json"

// Codec encodes the typed values of Guarded and Election for storage on the
// masters.
type Codec[T any] interface {
	Marshal(v T) ([]byte, error)
	Unmarshal(data []byte) (T, error)
}

// JSONCodec is the default Codec: encoding/json.
type JSONCodec[T any] struct{}

// Marshal returns the JSON encoding of v.
func (JSONCodec[T]) Marshal(v T) ([]byte, error) { return json.Marshal(v) }

// Unmarshal decodes JSON data into a T.
func (JSONCodec[T]) Unmarshal(data []byte) (T, error) {
	var v T
	err := json.Unmarshal(data, &v)
	return v, err
}
