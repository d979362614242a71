// A small vocabulary for writing CRD schemas in TypeScript. The schema objects written with it
// are the single source of truth: the CRD YAML and the TypeScript types are generated from them.
// `title` names the generated TypeScript interface and `tsType` maps a node to an existing type;
// both are codegen-only and are stripped from the CRD.

export interface JsonSchema {
  type?: 'object' | 'array' | 'string' | 'integer' | 'number' | 'boolean';
  description?: string;
  title?: string;
  tsType?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  additionalProperties?: JsonSchema | boolean;
  enum?: (string | number)[];
  default?: unknown;
  format?: string;
  pattern?: string;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  anyOf?: JsonSchema[];
  'x-kubernetes-int-or-string'?: boolean;
  'x-kubernetes-list-type'?: 'atomic' | 'set' | 'map';
  'x-kubernetes-list-map-keys'?: string[];
  'x-kubernetes-map-type'?: 'atomic' | 'granular';
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  'x-kubernetes-embedded-resource'?: boolean;
}

type Extra = Omit<JsonSchema, 'type' | 'description' | 'properties'>;

/** Kubernetes resource.Quantity: the API accepts `2` as well as `"500m"` and `"8Gi"`. */
export const QUANTITY_SCHEMA: JsonSchema = {
  anyOf: [{ type: 'integer' }, { type: 'string' }],
  pattern:
    '^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$',
  'x-kubernetes-int-or-string': true,
};

export const str = (description: string, extra: Extra = {}): JsonSchema => ({
  type: 'string',
  description,
  ...extra,
});
export const bool = (description: string, extra: Extra = {}): JsonSchema => ({
  type: 'boolean',
  description,
  ...extra,
});
export const int32 = (description: string, extra: Extra = {}): JsonSchema => ({
  type: 'integer',
  format: 'int32',
  description,
  ...extra,
});
export const int64 = (description: string, extra: Extra = {}): JsonSchema => ({
  type: 'integer',
  format: 'int64',
  description,
  ...extra,
});
export const stringMap = (description: string): JsonSchema => ({
  type: 'object',
  description,
  additionalProperties: { type: 'string' },
});
export const stringList = (description: string, extra: Extra = {}): JsonSchema => ({
  type: 'array',
  description,
  items: { type: 'string' },
  ...extra,
});
export const arrayOf = (description: string, items: JsonSchema, extra: Extra = {}): JsonSchema => ({
  type: 'array',
  description,
  items,
  ...extra,
});
export const quantityMap = (description: string): JsonSchema => ({
  type: 'object',
  description,
  additionalProperties: QUANTITY_SCHEMA,
});
export function object(
  title: string | undefined,
  description: string,
  properties: Record<string, JsonSchema>,
  extra: Extra = {},
): JsonSchema {
  return { type: 'object', description, ...(title ? { title } : {}), properties, ...extra };
}

/** Removes the codegen-only keys, recursively, so the result is a valid JSONSchemaProps. */
export function toCrdSchema(schema: JsonSchema): JsonSchema {
  const { title: _title, tsType: _tsType, ...rest } = schema;
  const out: JsonSchema = { ...rest };
  if (rest.properties) {
    out.properties = Object.fromEntries(Object.entries(rest.properties).map(([k, v]) => [k, toCrdSchema(v)]));
  }
  if (rest.items) out.items = toCrdSchema(rest.items);
  if (rest.additionalProperties && typeof rest.additionalProperties === 'object') {
    out.additionalProperties = toCrdSchema(rest.additionalProperties);
  }
  if (rest.anyOf) out.anyOf = rest.anyOf.map(toCrdSchema);
  return out;
}
