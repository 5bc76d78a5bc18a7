package stream_test

import (
	"crypto/tls"
	"testing"

	"github.com/grete-go/grete/stream"
	"github.com/stretchr/testify/require"
)

func TestKafkaConfigValidate(t *testing.T) {
	one := []string{"127.0.0.1:9092"}
	tests := []struct {
		name string
		cfg  stream.KafkaConfig
		errs []string // substrings the error must contain; none means valid
	}{
		{name: "one broker", cfg: stream.KafkaConfig{Brokers: one}},
		{name: "several brokers", cfg: stream.KafkaConfig{Brokers: []string{"k1:9092", "k2:9093", "k3.example.com:19092"}}},
		{name: "IPv6 broker", cfg: stream.KafkaConfig{Brokers: []string{"[::1]:9092"}}},
		{name: "TLS", cfg: stream.KafkaConfig{Brokers: one, TLS: &tls.Config{MinVersion: tls.VersionTLS12}, ClientID: "me"}},
		{name: "SASL PLAIN", cfg: stream.KafkaConfig{Brokers: one, SASL: &stream.SASL{Mechanism: stream.SASLPlain, User: "u", Password: "p"}}},
		{name: "SCRAM-SHA-256", cfg: stream.KafkaConfig{Brokers: one, SASL: &stream.SASL{Mechanism: stream.SASLScramSHA256, User: "u"}}},
		{name: "SCRAM-SHA-512", cfg: stream.KafkaConfig{Brokers: one, SASL: &stream.SASL{Mechanism: stream.SASLScramSHA512, User: "u", Password: "p"}}},
		{name: "zero value", cfg: stream.KafkaConfig{}, errs: []string{"no brokers"}},
		{name: "empty broker list", cfg: stream.KafkaConfig{Brokers: []string{}}, errs: []string{"no brokers"}},
		{name: "no port", cfg: stream.KafkaConfig{Brokers: []string{"localhost"}}, errs: []string{`broker "localhost" is not of the form host:port`}},
		{name: "no host", cfg: stream.KafkaConfig{Brokers: []string{":9092"}}, errs: []string{`broker ":9092" is not of the form host:port`}},
		{name: "empty port", cfg: stream.KafkaConfig{Brokers: []string{"host:"}}, errs: []string{`broker "host:" is not of the form host:port`}},
		{name: "empty broker", cfg: stream.KafkaConfig{Brokers: []string{"ok:1", ""}}, errs: []string{`broker "" is not of the form host:port`}},
		{name: "SASL without mechanism", cfg: stream.KafkaConfig{Brokers: one, SASL: &stream.SASL{User: "u"}}, errs: []string{"SASL.Mechanism is empty"}},
		{name: "SASL unsupported mechanism", cfg: stream.KafkaConfig{Brokers: one, SASL: &stream.SASL{Mechanism: "GSSAPI", User: "u"}},
			errs: []string{`SASL mechanism "GSSAPI" is not supported`}},
		{name: "SASL mechanism is case sensitive", cfg: stream.KafkaConfig{Brokers: one, SASL: &stream.SASL{Mechanism: "plain", User: "u"}},
			errs: []string{`SASL mechanism "plain" is not supported`}},
		{name: "SASL without user", cfg: stream.KafkaConfig{Brokers: one, SASL: &stream.SASL{Mechanism: stream.SASLPlain}}, errs: []string{"SASL.User is empty"}},
		{
			name: "every problem at once",
			cfg:  stream.KafkaConfig{Brokers: []string{"nohost"}, SASL: &stream.SASL{}},
			errs: []string{`broker "nohost"`, "SASL.Mechanism is empty", "SASL.User is empty"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.errs) == 0 {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Contains(t, err.Error(), "stream: invalid Kafka config: ")
			for _, want := range tt.errs {
				require.Contains(t, err.Error(), want)
			}
		})
	}
}
