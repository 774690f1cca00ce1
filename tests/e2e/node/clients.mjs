// The Node clients of tests/e2e/test_clients.py: openai-node and the Vercel AI SDK
// (with its OpenAI-compatible provider), one feature per run:
//   node clients.mjs CLIENT FEATURE BASE_URL API_KEY TEXT
// prints one JSON line: {"result": ...} or {"error": {"class", "status", "message"}}
// or {"na": "why"} for a feature the client has no API for.
import OpenAI from "openai";
import { generateText, streamText, generateObject, embedMany, tool } from "ai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { z } from "zod";

const [client, feature, baseURL, apiKey, text] = process.argv.slice(2);
const user = [{ role: "user", content: text }];
const weatherTool = {
  type: "function",
  function: {
    name: "get_weather", description: "Get the current weather for a city.",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};
const weatherSchema = {
  type: "object", properties: { city: { type: "string" } }, required: ["city"],
  additionalProperties: false,
};

const openaiNode = {
  sdk: () => new OpenAI({ baseURL, apiKey, maxRetries: 0 }),
  async chat() {
    const r = await this.sdk().chat.completions.create({ model: "gpt-x", messages: user });
    return r.choices[0].message.content;
  },
  async stream() {
    const s = await this.sdk().chat.completions.create({ model: "gpt-x", messages: user, stream: true });
    const pieces = [];
    for await (const c of s) if (c.choices[0]?.delta?.content) pieces.push(c.choices[0].delta.content);
    return pieces;
  },
  async tools() {
    const r = await this.sdk().chat.completions.create({ model: "gpt-x", messages: user, tools: [weatherTool] });
    const call = r.choices[0].message.tool_calls[0];
    return [call.function.name, JSON.parse(call.function.arguments)];
  },
  async structured() {
    const r = await this.sdk().chat.completions.create({
      model: "gpt-x", messages: user,
      response_format: { type: "json_schema", json_schema: { name: "Weather", schema: weatherSchema, strict: true } },
    });
    return JSON.parse(r.choices[0].message.content);
  },
  async embeddings() {
    const r = await this.sdk().embeddings.create({ model: "emb-up", input: JSON.parse(text) });
    return r.data.map((d) => d.embedding);
  },
  async logprobs() {
    const r = await this.sdk().chat.completions.create({ model: "gpt-x", messages: user, logprobs: true, top_logprobs: 2 });
    return r.choices[0].logprobs.content.map((e) => e.token);
  },
  async n() {
    const r = await this.sdk().chat.completions.create({ model: "gpt-x", messages: user, n: 3 });
    return r.choices.map((c) => c.message.content);
  },
  async errors() {
    await this.sdk().chat.completions.create({ model: "no-such-model", messages: user });
  },
  async cancel() {
    const s = await this.sdk().chat.completions.create({ model: "gpt-x", messages: user, stream: true });
    let got = 0;
    for await (const _ of s) if (++got === 2) break; // leaving the loop aborts the request
    return got;
  },
};

const aiSdk = {
  provider: () => createOpenAICompatible({ name: "seawall", baseURL, apiKey, supportsStructuredOutputs: true }),
  async chat() {
    return (await generateText({ model: this.provider()("gpt-x"), prompt: text, maxRetries: 0 })).text;
  },
  async stream() {
    const r = streamText({ model: this.provider()("gpt-x"), prompt: text, maxRetries: 0 });
    const pieces = [];
    for await (const d of r.textStream) if (d) pieces.push(d);
    return pieces;
  },
  async tools() {
    const r = await generateText({
      model: this.provider()("gpt-x"), prompt: text, maxRetries: 0,
      tools: { get_weather: tool({ description: "Get the current weather for a city.", inputSchema: z.object({ city: z.string() }) }) },
    });
    const call = r.toolCalls[0];
    return [call.toolName, call.input];
  },
  async structured() {
    const r = await generateObject({
      model: this.provider()("gpt-x"), prompt: text, maxRetries: 0,
      schema: z.object({ city: z.string() }), schemaName: "Weather",
    });
    return r.object;
  },
  async embeddings() {
    const r = await embedMany({ model: this.provider().textEmbeddingModel("emb-up"), values: JSON.parse(text), maxRetries: 0 });
    return r.embeddings;
  },
  async logprobs() { return { na: "no logprobs in the OpenAI-compatible provider" }; },
  async n() { return { na: "no n > 1 (one answer per call)" }; },
  async errors() {
    await generateText({ model: this.provider()("no-such-model"), prompt: text, maxRetries: 0 });
  },
  async cancel() {
    const abort = new AbortController();
    const r = streamText({ model: this.provider()("gpt-x"), prompt: text, maxRetries: 0, abortSignal: abort.signal });
    let got = 0;
    try {
      for await (const _ of r.textStream) if (++got === 2) abort.abort();
    } catch (e) {
      if (e.name !== "AbortError") throw e;
    }
    return got;
  },
};

const clients = { "openai-node": openaiNode, "ai-sdk": aiSdk };
try {
  const out = await clients[client][feature]();
  console.log(JSON.stringify(out && out.na ? out : { result: out ?? null }));
} catch (e) {
  const status = e.status ?? e.statusCode ?? null;
  console.log(JSON.stringify({ error: { class: e.constructor.name, status, message: String(e.message) } }));
}
