/**
 * Trunk → agent calls end to end: sipp as the trunk with real G.711 RTP (its pcap play), the
 * gateway in this process (embedded SIP engine, drachtio-srf, mediasoup, Redis), and agents built
 * on the client SDK with a real WebRTC stack (@roamhq/wrtc). Every answered call checks RTP both
 * ways: in the agent's WebRTC stats and at the sipp side (tshark on sipp's media port).
 */
import { createHmac } from 'node:crypto';
import http from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { captureUdp, type CallFixture, startCallGateway } from '../helpers/calls.js';
import { freePort, runSipp, sipHeader, startSipp } from '../helpers/sipp.js';

let fx: CallFixture | undefined;

afterEach(async () => {
  await fx?.close();
  fx = undefined;
});

const routeAll = (agentId: string) => ({ routing: { dids: [{ number: '*', agent: agentId }], groups: [], defaultTrunk: '' } });

describe('inbound calls', () => {
  it('rings the agent, connects the first answer, carries audio both ways, and the trunk BYE ends it', async () => {
    fx = await startCallGateway(routeAll('agent-1'));
    const agent = await fx.agent('agent-1');
    const mediaPort = await freePort();
    const capture = captureUdp(mediaPort);
    await capture.ready;
    const trunk = startSipp({ scenario: 'trunk-call-rtp', target: fx.sipTarget, keys: { hold_ms: '3000' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 30_000 });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    expect(incoming.call.from.number).toMatch(/^\+4930555000/);
    const call = await agent.client.answer(incoming.call.id);
    await agent.waitForEvent('answered', undefined, 5000);
    // let audio flow, then count from both sides
    await new Promise((r) => setTimeout(r, 2000));
    const counts = await agent.packetCounts(call.id);
    expect(counts.received, 'RTP from the trunk at the agent').toBeGreaterThan(50);
    expect(counts.sent, 'RTP from the agent').toBeGreaterThan(50);
    const ended = await agent.waitForEvent('ended', undefined, 15_000);
    expect(ended).toMatchObject({ reason: 'hangup_remote' });
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    const atSipp = await capture.stop();
    expect(atSipp.byPayloadType.get(8) ?? 0, 'PCMA RTP packets that reached the sipp trunk').toBeGreaterThan(50);
    const ok = r.received(200, 'INVITE')[0]!;
    expect(ok).toMatch(/m=audio \d+ RTP\/AVP 8 101/);
    expect(sipHeader(ok, 'Contact')).toMatch(/^<sip:/);
    // the call record, with masked numbers
    const record = (await fx.gw.store!.recentRecords(1))[0]!;
    expect(record).toMatchObject({ direction: 'inbound', trunkId: 'loopback', agentId: 'agent-1', endReason: 'hangup_remote', codec: 'PCMA' });
    expect(record.from).toMatch(/^\+49\*+\d\d$/);
    expect(record.answeredAt).toBeTruthy();
    // and the metrics: one finished call, its post-dial delay and talk time
    const metrics = await (await fetch(`http://127.0.0.1:${fx.gw.httpAddress.port}/metrics`)).text();
    expect(metrics).toContain('ringbridge_calls_finished_total{direction="inbound",end_reason="hangup_remote"} 1');
    expect(metrics).toContain('ringbridge_call_pdd_seconds_count{direction="inbound"} 1');
    expect(Number(/ringbridge_call_duration_seconds_sum\{direction="inbound"\} ([\d.]+)/.exec(metrics)?.[1])).toBeGreaterThan(1);
    expect(metrics).toContain('ringbridge_calls_active{direction="inbound"} 0');
    expect(metrics).toContain('ringbridge_agents{presence="available"} 1');
    expect(metrics).toContain('ringbridge_sip_requests_total{direction="in",method="INVITE"} 1');
    expect(metrics).toContain('ringbridge_mediasoup_workers{state="alive"} 1'); // test profile: one worker
    expect(metrics).toMatch(/ringbridge_mediasoup_worker_cpu_seconds_total\{worker="0"\} [0-9.]+/);
    expect(Number(/ringbridge_redis_command_duration_seconds_count\{command="hset"\} (\d+)/.exec(metrics)?.[1])).toBeGreaterThan(0);
    expect(metrics).toContain('ringbridge_sip_requests_total{direction="in",method="BYE"} 1');
    expect(metrics).toMatch(/ringbridge_sip_responses_total\{direction="out",status_class="2xx"\} [2-9]/); // 200 to INVITE and BYE
    expect(metrics).toMatch(/ringbridge_sip_responses_total\{direction="out",status_class="1xx"\} [1-9]/);
  }, 40_000);

  it('takes a late offer: offers in the 200 OK, applies the answer from the ACK, and carries audio', async () => {
    fx = await startCallGateway(routeAll('agent-1'));
    const agent = await fx.agent('agent-1');
    const mediaPort = await freePort();
    const capture = captureUdp(mediaPort);
    await capture.ready;
    const trunk = startSipp({ scenario: 'trunk-call-late-offer', target: fx.sipTarget, keys: { hold_ms: '3000' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 30_000 });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    const call = await agent.client.answer(incoming.call.id);
    await agent.waitForEvent('track', undefined, 5000);
    expect(call.codec?.mimeType).toBe('audio/PCMA');
    await new Promise((r) => setTimeout(r, 2000));
    const counts = await agent.packetCounts(call.id);
    expect(counts.received, 'RTP from the trunk at the agent').toBeGreaterThan(50);
    await agent.waitForEvent('ended', undefined, 15_000);
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    const ok = r.received(200, 'INVITE')[0]!;
    expect(ok, 'our offer lists the trunk codecs and telephone-event').toMatch(/m=audio \d+ RTP\/AVP [\d ]*8[\d ]*/);
    expect(ok).toMatch(/a=rtpmap:\d+ telephone-event\/8000/);
    const atSipp = await capture.stop();
    expect(atSipp.byPayloadType.get(8) ?? 0, 'PCMA RTP at the sipp trunk').toBeGreaterThan(50);
  }, 40_000);

  it('answers 480 when no agent is available, and POSTs the call record to the CDR webhook', async () => {
    const got: { headers: http.IncomingHttpHeaders; body: string }[] = [];
    const server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        got.push({ headers: req.headers, body });
        res.writeHead(got.length === 1 ? 503 : 204).end(); // the first attempt fails: retried
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    try {
      const secret = 'cdr-webhook-test-secret-0123456789abcdef';
      fx = await startCallGateway({ ...routeAll('nobody'), calls: { cdrWebhook: { url: `http://127.0.0.1:${port}/cdr`, timeoutMs: 2000, maxAttempts: 3, backoffBaseMs: 50, backoffMaxMs: 200, secret } } });
      const r = await runSipp({ scenario: 'uac-expect-480', target: fx.sipTarget });
      expect(r.exitCode, r.describe()).toBe(0);
      for (let i = 0; i < 100 && got.length < 2; i++) {
        await new Promise((res) => setTimeout(res, 50));
      }
      expect(got).toHaveLength(2);
      const rec = JSON.parse(got[1]!.body) as Record<string, unknown>;
      expect(rec).toMatchObject({ direction: 'inbound', endReason: 'unavailable', sipStatus: 480, trunkId: 'loopback' });
      expect(String(rec.from)).toMatch(/\*/); // masked
      expect(got[1]!.headers['idempotency-key']).toBe(rec.callId);
      expect(got[1]!.headers['x-ringbridge-signature']).toBe(`sha256=${createHmac('sha256', secret).update(got[1]!.body).digest('hex')}`);
    } finally {
      server.close();
    }
  });
});
