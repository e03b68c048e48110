package distlock

import "encoding/json"

// Codec encodes the typed values of Guarded and Election for storage on the
// masters. Passing a nil Codec to NewGuarded or NewElection means JSON
// (encoding/json).
type Codec[T any] interface {
	Marshal(v T) ([]byte, error)
	Unmarshal(data []byte) (T, error)
}

// jsonCodec is the default Codec: encoding/json.
type jsonCodec[T any] struct{}

func (jsonCodec[T]) Marshal(v T) ([]byte, error) { return json.Marshal(v) }

func (jsonCodec[T]) Unmarshal(data []byte) (T, error) {
	var v T
	err := json.Unmarshal(data, &v)
	return v, err
}
