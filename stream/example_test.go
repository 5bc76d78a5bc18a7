package stream_test

import (
	"errors"
	"fmt"

	"github.com/grete-go/grete/stream"
)

// A task decodes JSON values with a serde and builds its outputs with
// Encoded; bytes that are not valid JSON give a *DecodeError, which the
// job's error policy treats as bad input.
func ExampleJSON() {
	type Click struct {
		User string `json:"user"`
		Page string `json:"page"`
	}
	clicks := stream.JSON[Click]()

	m := &stream.Message{Topic: "clicks", Key: []byte("u1"), Value: []byte(`{"user":"u1","page":"/home"}`)}
	c, err := stream.DecodeValue(clicks, m)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.User, "visited", c.Page)

	out, err := stream.Encoded("pages", stream.String(), c.Page, clicks, c)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s %s %s\n", out.Topic, out.Key, out.Value)

	_, err = clicks.Decode([]byte("not json"))
	var de *stream.DecodeError
	fmt.Println(errors.As(err, &de), de.Format)
	// Output:
	// u1 visited /home
	// pages /home {"user":"u1","page":"/home"}
	// true json
}
