package stream

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
)

// SASLMechanism names a SASL mechanism a Kafka cluster accepts.
type SASLMechanism string

// The SASL mechanisms Grete supports.
const (
	SASLPlain       SASLMechanism = "PLAIN"
	SASLScramSHA256 SASLMechanism = "SCRAM-SHA-256"
	SASLScramSHA512 SASLMechanism = "SCRAM-SHA-512"
)

// SASL holds SASL credentials. Use it together with TLS on any network you
// do not control: PLAIN sends the password as it is.
type SASL struct {
	Mechanism SASLMechanism
	User      string
	Password  string
}

// KafkaConfig says how to reach a Kafka cluster. The zero value is not
// usable (it has no brokers); everything else has a working default.
type KafkaConfig struct {
	// Brokers are the bootstrap addresses, "host:port".
	Brokers []string
	// ClientID is sent with every request; defaults to "grete".
	ClientID string
	// TLS, when non-nil, encrypts every connection with this configuration.
	TLS *tls.Config
	// SASL, when non-nil, authenticates every connection.
	SASL *SASL
}

// Validate reports what is wrong with the configuration, if anything.
func (c KafkaConfig) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("no brokers: set KafkaConfig.Brokers to at least one host:port"))
	}
	for _, b := range c.Brokers {
		host, port, err := net.SplitHostPort(b)
		n, perr := strconv.Atoi(port)
		if err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			errs = append(errs, fmt.Errorf("broker %q is not of the form host:port (port 1-65535)", b))
		}
	}
	if s := c.SASL; s != nil {
		switch s.Mechanism {
		case SASLPlain, SASLScramSHA256, SASLScramSHA512:
		case "":
			errs = append(errs, errors.New("SASL is set but SASL.Mechanism is empty"))
		default:
			errs = append(errs, fmt.Errorf("SASL mechanism %q is not supported (use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)", s.Mechanism))
		}
		if s.User == "" {
			errs = append(errs, errors.New("SASL is set but SASL.User is empty"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stream: invalid Kafka config: %w", err)
	}
	return nil
}
