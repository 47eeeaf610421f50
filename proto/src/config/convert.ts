export const toProtoConfiguration = () => {}; export const fromProtoConfiguration = () => {}; export const toProtoResources = () => {}; export const fromProtoResources = () => {};
