package task_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// selfSigned returns a server certificate for 127.0.0.1 and a client TLS
// config that trusts it.
func selfSigned(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "grete-test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
	client = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return server, client
}

// emitOnce sends one message from its first Window and then asks the job to
// shut down: a job that needs no input records, so the test needs no
// producer of its own on the secured cluster.
type emitOnce struct{ sent bool }

func (e *emitOnce) Process(context.Context, stream.Message, task.Collector, task.Coordinator) error {
	return nil
}

func (e *emitOnce) Window(_ context.Context, out task.Collector, co task.Coordinator) error {
	if !e.sent {
		e.sent = true
		if err := out.Send(stream.Outgoing{Topic: "secure-out", Key: []byte("k"), Value: []byte("over the wire")}); err != nil {
			return err
		}
		co.Commit()
		return nil
	}
	co.Shutdown()
	return nil
}

func TestSecuredClusters(t *testing.T) {
	serverTLS, clientTLS := selfSigned(t)
	cases := []struct {
		name      string
		mechanism stream.SASLMechanism
		tls       bool
		kgoSASL   sasl.Mechanism
	}{
		{"plain over TLS", stream.SASLPlain, true, plain.Auth{User: "grete", Pass: "s3cret"}.AsMechanism()},
		{"scram-sha-256", stream.SASLScramSHA256, false, scram.Auth{User: "grete", Pass: "s3cret"}.AsSha256Mechanism()},
		{"scram-sha-512 over TLS", stream.SASLScramSHA512, true, scram.Auth{User: "grete", Pass: "s3cret"}.AsSha512Mechanism()},
		{"tls only", "", true, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var opts []kfake.Opt
			kc := stream.KafkaConfig{}
			var kopts []kgo.Opt
			if c.mechanism != "" {
				opts = append(opts, kfake.EnableSASL(), kfake.Superuser(string(c.mechanism), "grete", "s3cret"))
				kc.SASL = &stream.SASL{Mechanism: c.mechanism, User: "grete", Password: "s3cret"}
				kopts = append(kopts, kgo.SASL(c.kgoSASL))
			}
			if c.tls {
				opts = append(opts, kfake.TLS(serverTLS))
				kc.TLS = clientTLS
				kopts = append(kopts, kgo.DialTLSConfig(clientTLS.Clone()))
			}
			b := testkit.Broker(t, opts...)
			kc.Brokers = b.Addrs()
			testkit.CreateTopicWith(t, b.Addrs(), kopts, "secure-in", 1, nil)
			job := &task.Job{
				Name: "secure", Kafka: kc, Broadcast: []string{"secure-in"},
				NewTask: func() task.StreamTask { return &emitOnce{} }, Window: 10 * time.Millisecond,
				Outputs: []task.OutputTopic{{Name: "secure-out", Partitions: 1}},
				Logger:  quiet(),
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			require.NoError(t, job.Run(ctx))
			got := testkit.ReadAllWith(t, b.Addrs(), kopts, time.Minute, "secure-out")
			require.Len(t, got, 1)
			require.Equal(t, "over the wire", string(got[0].Value))

			if c.mechanism != "" {
				bad := *kc.SASL
				bad.Password = "wrong"
				kc.SASL = &bad
				job := &task.Job{Name: "secure", Kafka: kc, Inputs: []string{"secure-in"}, NewTask: func() task.StreamTask { return &emitOnce{} }, Logger: quiet()}
				err := job.Run(ctx)
				require.Error(t, err, "a wrong password must not connect")
			}
		})
	}
}
